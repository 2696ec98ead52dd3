"""Fault: a worker process killed with SIGKILL under load loses no command and duplicates none."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from _runtime_support import (
    CONNECTOR,
    Upstream,
    all_results,
    command,
    produce,
    put_tenant,
    wait_results,
)

from core.kafka import make_consumer, start_client
from schemas import Result, ResultStatus

pytestmark = [pytest.mark.integration, pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("_runtime_worker_proc.py")


async def _spawn(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), cwd=str(ROOT), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"),
    )


async def _count_results_until(settings, at_least: int) -> int:
    consumer = make_consumer(settings, settings.topics.results, group_id=None)
    await start_client(consumer, what="test counter")
    seen = 0
    try:
        async with asyncio.timeout(60):
            while seen < at_least:
                batch = await consumer.getmany(timeout_ms=200)
                seen += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return seen


async def test_worker_killed_with_sigkill_under_load_loses_no_command(settings, vault_admin, stack_env, tmp_path):
    upstream = Upstream()
    async with upstream.running():
        tenants = [f"k{i}{settings.topic_prefix[1:9]}" for i in range(4)]
        canary_tokens = [await put_tenant(vault_admin, upstream, t) for t in tenants]
        approle = await vault_admin.bootstrap_pool(CONNECTOR)
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            **stack_env,
            "PYTHONPATH": str(ROOT),
            "SWITCHYARD_TOPIC_PREFIX": settings.topic_prefix,
            "SWITCHYARD_TOPIC_PARTITIONS": str(settings.topic_partitions),
            f"SWITCHYARD_VAULT_ROLE_ID_{CONNECTOR.upper()}": approle.role_id,
            f"SWITCHYARD_VAULT_SECRET_ID_{CONNECTOR.upper()}": approle.secret_id,
            "TEST_UPSTREAM_URL": upstream.base_url,
            "TEST_INSTANCE_ID": "w0",  # a restarted pod keeps its name
        }
        commands = [command(t, delay=0.02, faults=[500] if i % 7 == 0 else []) for i, t in enumerate(tenants * 150)]
        log = tmp_path / "worker.log"
        first = await _spawn(env, log)
        try:
            await produce(settings, commands)
            await _count_results_until(settings, 150)
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        finally:
            if first.returncode is None:
                first.kill()
        second = await _spawn(env, log)
        try:
            await wait_results(settings, {c.command_id for c in commands}, within=90)
            second.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await second.wait() == 0
        finally:
            if second.returncode is None:
                second.kill()
        results = await all_results(settings)

    per_command = Counter(len(results[c.command_id]) for c in commands)
    assert per_command == {1: len(commands)}, per_command
    assert {r[0].status for r in results.values()} == {ResultStatus.SUCCEEDED}
    redone = sum(1 for c in commands if len(upstream.calls_for(c.command_id)) > (2 if c.resolved_arguments["faults"] else 1))
    print(f"\ncommands={len(commands)} redone_after_kill={redone}")
    # Redone calls reused the command's upstream idempotency key.
    for cmd in commands:
        assert len({c.idempotency_key for c in upstream.calls_for(cmd.command_id)}) == 1
    text = log.read_text()
    assert '"msg":"worker pool stopped"' in text
    leaked = [index for index, token in enumerate(canary_tokens) if token in text]
    assert not leaked, f"canary tokens {leaked} are in the log"
    assert all(isinstance(r[0], Result) for r in results.values())
