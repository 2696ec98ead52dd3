"""Cancellations under a worker SIGKILL: every other accepted command is cancelled as soon
as it is accepted, against slow upstreams (commands queue), while a worker of each pool
is killed and replaced. Every accepted command still ends with exactly one Result; a
command never cancelled succeeds; a cancelled one ends ``rejected`` or ``failed`` with
code ``cancelled`` and no side effect, or ``succeeded`` once (its request had been sent,
or a killed worker's attempt took effect and its new owner found it)."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from ingress.pipeline import command_id_for
from workers._execute import upstream_key_for

from ._harness import (
    FAST_WORKER_ARGS,
    Load,
    ResultLedger,
    add_fault,
    count,
    effects,
    reset_emulator,
    restart,
    sigkill,
    wait_until,
)
from .conftest import LOOKED_UP, TENANTS, WORKERS, FaultSystem

pytestmark = pytest.mark.fault

TOTAL = 600
LATENCY_MS = 3_000  # each tenant runs ~32 at a time, so a few seconds of load queue up


class Canceller:
    """Cancels every other command of ``load`` as it is accepted (retrying a refused or
    failed request, bounded), and remembers which ones it cancelled."""

    def __init__(self, load: Load, keys: dict[str, str]) -> None:
        self.load, self.keys = load, keys
        self.asked: set[str] = set()
        self.cancelled: set[str] = set()  # answered 202
        self.finished_first: set[str] = set()  # answered 409: its Result was in
        self._seen = 0

    async def run(self, until: asyncio.Task[None]) -> None:
        async with aiohttp.ClientSession() as session:
            while not until.done() or self._seen < len(self.load.accepted):
                fresh = list(self.load.accepted.items())[self._seen:]
                self._seen += len(fresh)
                await asyncio.gather(*(
                    self._cancel(session, command_id, tenant)
                    for index, (command_id, tenant) in enumerate(fresh, self._seen - len(fresh))
                    if index % 2 == 0
                ))
                await asyncio.sleep(0.05)

    async def _cancel(self, session: aiohttp.ClientSession, command_id: str, tenant: str) -> None:
        self.asked.add(command_id)
        url = f"{self.load.url}/v1/commands/{command_id}:cancel"
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        for attempt in range(50):
            try:
                async with session.post(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status == 202:
                self.cancelled.add(command_id)
                return
            if status == 409:
                self.finished_first.add(command_id)
                return
            assert status in (0, 429) or status >= 500, (status, command_id)
            await asyncio.sleep(min(0.5, 0.05 * (attempt + 1)))
        raise AssertionError(f"the cancellation of {command_id} was refused 50 times")


async def test_cancellations_during_a_worker_sigkill_end_each_command_once_without_effect(
    procs: FaultSystem,
) -> None:
    system = procs.system
    await reset_emulator(system)
    # Not on Gmail: its look for a killed worker's emails reads each recent message's
    # headers (all of its tenant's, here), and at this latency that outlasts the check's
    # bound; the timeouts would open the tenant's breaker and dead-letter its commands.
    for connector in set(WORKERS) - {"gmail"}:
        await add_fault(system, kind="latency", connector=connector, latency_ms=LATENCY_MS, count=100_000)
    ledger = ResultLedger(system.settings)
    await ledger.start()
    keys = procs.keys_of(*TENANTS)
    load = Load(system.ingress_url, keys, total=TOTAL, pace=0.3)
    canceller = Canceller(load, keys)
    submitting = asyncio.create_task(load.run())
    cancelling = asyncio.create_task(canceller.run(submitting))
    try:
        await wait_until(
            lambda: len(load.accepted) >= TOTAL // 3 or submitting.done(), 90, "a third of the load accepted"
        )
        for connector in WORKERS:
            sigkill(system, f"worker-{connector}-1")
        for connector in WORKERS:  # under the same name: the later scenarios kill it again
            restart(system, f"worker-{connector}-1",
                    ["worker", "--connector", connector, *FAST_WORKER_ARGS], metrics=True)
        async with asyncio.timeout(150):
            await submitting
            await cancelling
        counts = await count("cancellations during a worker sigkill", system, ledger, load, connectors=WORKERS,
                             within=180, extra={"cancel_requested": len(canceller.cancelled),
                                                "finished_before_cancel": len(canceller.finished_first)})
    finally:
        for task in (submitting, cancelling):
            task.cancel()  # a failed scenario's load must not run on into the next one
        await ledger.stop()
    assert system.dead() == [], system.dead()

    assert counts.accepted == TOTAL
    assert (counts.lost, counts.duplicates, counts.final) == (0, 0, TOTAL), counts
    results, codes = ledger.results, ledger.errors
    outcome = {command_id: results[command_id][0] for command_id in load.accepted}  # (status, connector)
    # Never cancelled: succeeded, every one.
    kept = set(load.accepted) - canceller.cancelled
    assert Counter(outcome[c][0] for c in kept) == {"succeeded": len(kept)}
    # Cancelled: ended by it (rejected or failed, code cancelled) or ran to success.
    ended = {c for c in canceller.cancelled if outcome[c][0] != "succeeded"}
    assert {(outcome[c][0], codes.get(c)) for c in ended} <= {("rejected", "cancelled"), ("failed", "cancelled")}
    by_status = Counter(outcome[c][0] for c in canceller.cancelled)
    print(f"FAULT-CANCELLED {dict(by_status)} of {len(canceller.cancelled)} cancelled")
    assert by_status["rejected"] > 0, "no cancellation took effect: the commands did not queue"

    # Side effects: one per succeeded command, none for a command a cancellation ended
    # (the webhook's too when it ended rejected: nothing of it had been sent).
    upstream = {
        command_id_for(tenant, load.space, f"{load.tag}-{n}"): upstream_key_for(tenant, load.space, f"{load.tag}-{n}")
        for n in range(TOTAL) for tenant in TENANTS
    }
    for connector in WORKERS:
        seen = await effects(system, connector)
        assert all(times == 1 for times in seen.values() if times), (connector, seen)
        for command_id, (status, routed_to) in outcome.items():
            if routed_to != connector:
                continue
            took_effect = seen.get(upstream[command_id], 0)
            if status == "succeeded":
                assert took_effect == 1, (connector, command_id)
            elif connector in LOOKED_UP or status == "rejected":
                assert took_effect == 0, (connector, command_id, status)
