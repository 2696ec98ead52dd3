"""Scaling out on one machine: a 3-broker cluster (RF 3), two router processes, and the
webhook worker pool walked 1 → 2 → 4 → 2 processes, one router stopped and started again,
all under a steady load. Partitions move at every step; no command is lost or run twice.

Two tenants sit on each of the six partitions, so every router and worker process owns
partitions that carry load (checked: each of the four workers succeeds commands, each
router routes some).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench._scale_out import copies_by_command, spread_tenants, wait_group
from core.settings import Settings
from switchyard.stack import LocalStack
from switchyard.system import LocalSystem

from ._harness import (
    FAST_WORKER_ARGS,
    OPEN_INGRESS_ARGS,
    Load,
    ResultLedger,
    count,
    ensure_pool_roles,
    load_tenants,
    reset_emulator,
    wait_until,
    warm_up,
)

# A 3-broker cluster to start, then a walk of six rebalances under load.
pytestmark = [pytest.mark.fault, pytest.mark.timeout(600)]

PARTITIONS = 6
CONNECTOR = "http"
TENANTS = dict.fromkeys(spread_tenants("scale", PARTITIONS, 2), CONNECTOR)
# Results to see after each step: the step's new owners are really working.
STEP_RESULTS = 150
MAX_CHUNKS = 400


@dataclass
class Scaled:
    stack: LocalStack
    system: LocalSystem
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def scaled(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scaled]:
    state = tmp_path_factory.mktemp("scale_out")
    stack = LocalStack(state / "stack", brokers=3)
    system: LocalSystem | None = None
    try:
        env = await ensure_pool_roles(await asyncio.to_thread(stack.up), [CONNECTOR])
        system = LocalSystem(
            state / "system",
            connectors=(CONNECTOR,),
            workers={CONNECTOR: 1},
            routers=2,
            stack_env=env,
            env={
                "SWITCHYARD_TOPIC_PREFIX": f"scl{uuid.uuid4().hex[:8]}.",
                "SWITCHYARD_TOPIC_PARTITIONS": str(PARTITIONS),
                "SWITCHYARD_REPLICATION_FACTOR": "3",
            },
            args={"worker": FAST_WORKER_ARGS, "ingress": OPEN_INGRESS_ARGS},
        )
        await system.start()
        keys = await system.provision(load_tenants(system.emulator_url, TENANTS))
        await warm_up(system, keys)
        yield Scaled(stack, system, keys)
    finally:
        if system is not None:
            system.stop()
        await asyncio.to_thread(stack.down)


@dataclass
class SteadyLoad:
    """Chunks of :class:`Load` one after another (~40 commands/s) until :meth:`finish`."""

    url: str
    keys: dict[str, str]
    loads: list[Load] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for _ in range(MAX_CHUNKS):
            if self._stop.is_set():
                return
            load = Load(self.url, self.keys, total=100, batch=10, clients=1, pace=0.25)
            self.loads.append(load)
            await load.run()
        raise AssertionError("the walk outlasted the load's bound")

    @property
    def accepted(self) -> int:
        return sum(len(load.accepted) for load in self.loads)

    async def finish(self) -> Load:
        """Stop after the current chunk; every chunk as one load (for the counts)."""
        self._stop.set()
        assert self._task is not None
        async with asyncio.timeout(120):
            await self._task
        merged = self.loads[0]
        for load in self.loads[1:]:
            merged = merged.merged(load)
        return merged


async def _succeeded(url: str) -> float:
    """The ``switchyard_commands_succeeded`` total one worker process serves."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "switchyard_commands_succeeded"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def _result_fields(record: object) -> tuple[str, dict[str, object]] | None:
    value = getattr(record, "value", None)
    if not value:
        return None
    body = orjson.loads(value)
    times = body.get("times") or {}
    return str(body["command_id"]), {
        "attempts": body.get("attempts"),
        "finished_at": times.get("finished_at"),
    }


async def _duplicate_details(
    settings: Settings, ids: set[str]
) -> dict[str, list[dict[str, object]]]:
    """Every Result of ``ids`` on the results topic: where it sits and when it was made."""
    copies = await copies_by_command(
        settings, settings.topics.results, within=60, command_of=_result_fields
    )
    return {command_id: found for command_id, found in copies.items() if command_id in ids}


def _dedup_entry(record: object) -> tuple[str, dict[str, object]] | None:
    value = getattr(record, "value", None)
    if not value:
        return None
    entry = orjson.loads(value)
    return str(entry.get("c")), {"s": entry.get("s"), "entry_ts": entry.get("ts")}


async def _provenance(settings: Settings, twice: set[str]) -> dict[str, object]:
    """Where each copy came from: commands submitted, routed outputs, dedup entries.

    Two routed outputs for one id blame the router; one routed output with two
    Results blames the workers.
    """
    topics = settings.topics
    routed = await copies_by_command(settings, topics.connector(CONNECTOR))
    submitted = await copies_by_command(settings, topics.commands)
    dedup = await copies_by_command(
        settings, f"{settings.topic_prefix}router-dedup-changelog", command_of=_dedup_entry
    )
    routed_twice = sorted(c for c, copies in routed.items() if len(copies) > 1)
    return {
        "routed_ids": len(routed),
        "routed_twice": routed_twice,
        "submitted_twice": sum(1 for copies in submitted.values() if len(copies) > 1),
        "details": {
            c: {
                "submitted": submitted.get(c, []),
                "routed": routed.get(c, []),
                "dedup": dedup.get(c, []),
            }
            for c in sorted(twice | set(routed_twice))
        },
    }


async def test_workers_walked_1_2_4_2_and_a_router_restarted_under_load_lose_and_duplicate_no_command(
    scaled: Scaled,
) -> None:
    system = scaled.system
    settings = system.settings
    routers = f"{settings.topic_prefix}router"
    workers = f"{settings.topic_prefix}workers.{CONNECTOR}"
    await reset_emulator(system)
    ledger = ResultLedger(settings)
    await ledger.start()
    steps: dict[str, float] = {}
    t0 = time.monotonic()

    async def step(name: str, group: str, members: int, act: Callable[[], object]) -> None:
        """``act()``, wait for ``group`` to settle with ``members``, then for more Results."""
        start = time.monotonic()
        steps[f"{name}_at"] = round(time.time(), 2)
        await asyncio.to_thread(act)
        await wait_group(settings, group, members, within=120)
        steps[f"{name}_stable_s"] = round(time.monotonic() - start, 1)
        seen = len(ledger.results)
        await wait_until(
            lambda: len(ledger.results) >= seen + STEP_RESULTS, 120, f"Results after {name}"
        )
        assert system.dead() == [], system.dead()

    load = SteadyLoad(system.ingress_url, scaled.keys)
    try:
        await wait_group(settings, routers, 2, within=60)
        await wait_group(settings, workers, 1, within=60)
        load.start()
        await wait_until(lambda: len(ledger.results) >= STEP_RESULTS, 120, "Results on 1 worker")
        await step("workers_1_to_2", workers, 2, lambda: system.add_worker(CONNECTOR))
        await step(
            "workers_2_to_4", workers, 4, lambda: [system.add_worker(CONNECTOR) for _ in range(2)]
        )
        # Every one of the four owns a connector partition that carries load.
        names = [f"worker-{CONNECTOR}-{n}" for n in range(1, 5)]
        urls = {name: system.metrics_urls[name] for name in names}
        done: dict[str, float] = {}

        async def all_worked() -> bool:
            for name, url in urls.items():
                done[name] = await _succeeded(url)
            return all(done.values())

        for _ in range(120):  # bounded: 60 s
            if await all_worked():
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"a worker of four ran nothing: {done}")
        await step(
            "workers_4_to_2", workers, 2, lambda: [system.stop_worker(CONNECTOR) for _ in range(2)]
        )
        await step("router_2_to_1", routers, 1, system.stop_router)
        await step("router_1_to_2", routers, 2, system.add_router)
        walked_in = round(time.monotonic() - t0, 1)
        merged = await load.finish()
        counts = await count(
            "scale out: workers 1-2-4-2, router 2-1-2 on 3 brokers",
            system,
            ledger,
            merged,
            connectors=[CONNECTOR],
            within=150,
            extra={"walk_s": walked_in, **steps, "succeeded_by_worker_at_4": done},
        )
        twice = {c for c in merged.attempted if len(ledger.results.get(c, ())) > 1}
        if counts.duplicates:
            details = await _duplicate_details(settings, twice)
            print("FAULT-DUPLICATES " + orjson.dumps(details).decode(), flush=True)
        provenance = await _provenance(settings, twice)
        print("FAULT-PROVENANCE " + orjson.dumps(provenance).decode(), flush=True)
    finally:
        await ledger.stop()
    assert counts.accepted >= 5 * STEP_RESULTS
    assert counts.lost == 0, counts
    assert counts.duplicates == 0, counts
    assert counts.final == counts.accepted
    assert counts.statuses == {"succeeded": counts.accepted}, counts.statuses
    # The webhook upstream honours Idempotency-Key: each command's side effect once.
    http = counts.effects[CONNECTOR]
    assert http["keys_with_repeats"] == 0 and http["keys"] == http["succeeded"], http
    # Both routers routed, and so did the second one's replacement (its log is appended).
    for name, lives in (("router", 1), ("router-2", 2)):
        log = Path(system.log_dir / f"{name}.log").read_text(errors="replace")
        assert log.count("first command received") >= lives, f"{name} routed nothing"
    assert system.dead() == [], system.dead()
