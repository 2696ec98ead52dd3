"""Emulator error storms for one tenant: its commands end succeeded or dead-lettered exactly
once (retries, Retry-After, circuit breaker, retry tiers); the other tenants all succeed."""

from __future__ import annotations

import aiohttp
import pytest

from ._harness import Load, ResultLedger, add_fault, count, reset_emulator
from .conftest import WORKERS, FaultSystem

pytestmark = pytest.mark.fault

TOTAL = 300


@pytest.mark.parametrize(
    ("kind", "retry_after"), [("429", 1), ("500", None)], ids=["429-retry-after", "500"]
)
async def test_an_error_storm_on_one_tenant_ends_its_commands_once_and_spares_the_others(
    procs: FaultSystem, kind: str, retry_after: int | None
) -> None:
    system = procs.system
    storm_tenant = f"storm{kind}"
    keys = procs.keys_of("acme", "hookb", storm_tenant)
    await reset_emulator(system)
    storm = 60
    await add_fault(system, kind=kind, tenant=storm_tenant, count=storm, retry_after=retry_after)
    ledger = ResultLedger(system.settings)
    await ledger.start()
    try:
        load = Load(system.ingress_url, keys, total=TOTAL, pace=0.1)
        await load.run()
        await ledger.drain(load.accepted, within=90)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{system.emulator_url}/_emulator/calls",
                                   params={"connector": "http", "tenant": storm_tenant}) as response:
                calls = (await response.json())["calls"]
        served = sum(1 for c in calls if c["summary"].get("fault") == kind)
        counts = await count(
            f"{kind} storm on {storm_tenant}", system, ledger, load, connectors=WORKERS, within=90,
            extra={"storm_faults_served": served, "storm_calls": len(calls)},
        )
    finally:
        await ledger.stop()
    assert counts.lost == 0 and counts.duplicates == 0, counts
    assert counts.final == counts.accepted == TOTAL
    per_tenant: dict[str, dict[str, int]] = {}
    for command_id, tenant in load.accepted.items():
        status = ledger.results[command_id][0][0]
        per_tenant.setdefault(tenant, {}).setdefault(status, 0)
        per_tenant[tenant][status] += 1
    reasons: dict[str, int] = {}
    for command_id in load.accepted:
        if command_id in ledger.errors:
            reasons[ledger.errors[command_id]] = reasons.get(ledger.errors[command_id], 0) + 1
    print(f"FAULT-STATUSES {kind} storm: {per_tenant} error codes: {reasons}", flush=True)
    assert set(per_tenant[storm_tenant]) <= {"succeeded", "dead_lettered"}, per_tenant
    for tenant in keys:
        if tenant != storm_tenant:
            assert per_tenant[tenant] == {"succeeded": TOTAL // 3}, (tenant, per_tenant[tenant])
    assert served >= 1, "the storm never reached the emulator"
    assert counts.effects["http"]["keys_with_repeats"] == 0, counts.effects
    assert system.dead() == []
