"""One running system (emulators, router, two workers per pool, ingress) on the session's
Kafka and OpenBao, shared by the process-crash and error-storm scenarios of this package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from switchyard.demo import DemoTenant
from switchyard.system import LocalSystem

from ._harness import load_tenants, start_system, warm_up

# Slack, Gmail, Jira and Notion take no idempotency key (the workers look there for an
# earlier attempt's effect before acting again; Notion's tenant creates database rows with
# a key property); the webhook tenants' upstream honours Idempotency-Key. Every side
# effect must stay single.
TENANTS = {"acme": "slack", "beta": "gmail", "gamma": "notion", "delta": "jira", "hooka": "http", "hookb": "http"}
# Each error storm gets a tenant of its own: a storm opens that tenant's circuit breakers
# in the workers, which would otherwise still be open for the next storm.
STORM_TENANTS = {"storm429": "http", "storm500": "http"}
WORKERS = {"slack": 2, "gmail": 2, "notion": 2, "jira": 2, "http": 2}
# The connectors whose side effects the workers must find rather than repeat.
LOOKED_UP = ("slack", "gmail", "notion", "jira")


@dataclass
class FaultSystem:
    system: LocalSystem
    tenants: dict[str, DemoTenant]
    keys: dict[str, str]

    def keys_of(self, *tenants: str) -> dict[str, str]:
        return {tenant: self.keys[tenant] for tenant in tenants}


@pytest.fixture(scope="package")
async def procs(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultSystem]:
    system = await start_system(tmp_path_factory.mktemp("faults"), stack_env, workers=WORKERS)
    try:
        tenants = load_tenants(system.emulator_url, TENANTS | STORM_TENANTS)
        keys = await system.provision(tenants)
        await warm_up(system, keys)
        yield FaultSystem(system, {t.tenant_id: t for t in tenants}, keys)
    finally:
        system.stop()
