"""One command the router cannot resolve ends rejected; it does not fail its batch.

A failed batch stops the router, and the command came back on every restart: every
tenant of its partition stalled. Real Kafka, an in-process router."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from _router_support import (
    Outputs,
    apply,
    command,
    in_process_router,
    prepare_topics,
    stream_events,
    summary_action,
    workspace,
)

import router._decide
from schemas import ErrorCode, ResultStatus


async def test_a_command_whose_resolution_raises_is_rejected_and_its_batch_routed(
    own_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = own_settings
    await prepare_topics(s)
    odd, good = f"odd{uuid.uuid4().hex[:8]}", f"good{uuid.uuid4().hex[:8]}"
    action = summary_action("slack", "post_message", {"text": "{{ args.summary }}"})
    await apply(s, workspace(odd, [action]), workspace(good, [action]))
    plain_resolve = router._decide.resolve

    def resolve(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if cmd.tenant_id == odd:  # what nothing foresaw, e.g. a schema the check let by
            raise RecursionError("maximum recursion depth exceeded")
        return plain_resolve(cmd, *args, **kwargs)

    monkeypatch.setattr(router._decide, "resolve", resolve)
    commands = [command(good), command(odd), command(good)]
    outputs = await Outputs(s).start()
    try:
        async with in_process_router(s) as routing:
            await routing.handle_batch(stream_events(s, commands))
        got = await outputs.wait_ids([c.command_id for c in commands], limit=30)
    finally:
        await outputs.stop()

    rejected = got[commands[1].command_id].result
    assert rejected is not None and rejected.status is ResultStatus.REJECTED
    assert rejected.error is not None and rejected.error.code is ErrorCode.INTERNAL
    assert "recursion" not in rejected.error.message  # the log has it, not the caller
    assert all(got[c.command_id].routed is not None for c in (commands[0], commands[2]))
