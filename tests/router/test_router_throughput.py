"""How many commands per second one router process routes (slow; prints the figure)."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from _router_support import (
    Outputs,
    RouterProcess,
    apply,
    command,
    prepare_topics,
    publish,
    summary_action,
    workspace,
)

N = 3000


@pytest.mark.slow
async def test_one_router_routes_a_few_thousand_commands_per_burst(own_settings, tmp_path) -> None:
    settings = own_settings
    await prepare_topics(settings)
    tenants = [f"tp{i}_{uuid.uuid4().hex[:6]}" for i in range(6)]
    await apply(
        settings,
        *[
            workspace(t, [summary_action("slack", "op", {"text": "{{ args.summary }}"})])
            for t in tenants
        ],
    )
    outputs = await Outputs(settings).start()
    router = RouterProcess(settings, tmp_path).start()
    try:
        warm = command(tenants[0])
        await publish(settings, [warm])
        await outputs.wait_ids([warm.command_id], limit=60)
        cmds = [command(tenants[i % len(tenants)]) for i in range(N)]
        started = time.perf_counter()
        await publish(settings, cmds)
        await outputs.wait_for(lambda items: len(items) >= N + 1, limit=120)
        elapsed = time.perf_counter() - started
    finally:
        await outputs.stop()
        assert router.terminate() == 0
    rate = N / elapsed
    print(f"\nrouted {N} commands in {elapsed:.2f}s: {rate:.0f} commands/s")
    assert all(o.routed is not None for o in outputs.items)
    # Each command routed exactly once (a repeat and a loss would not cancel out here).
    assert Counter(o.command_id for o in outputs.items) == {c.command_id: 1 for c in [warm, *cmds]}
