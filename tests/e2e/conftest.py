"""One whole local system (emulators, ingress, router, worker pools as real processes)
per e2e module, on the session's Kafka and OpenBao with a topic prefix of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchyard.demo import DemoTenant, demo_tenants
from switchyard.system import LocalSystem, ensure_pool_roles


class RunningSystem:
    def __init__(self, system: LocalSystem, tenants: list[DemoTenant], keys: dict[str, str]) -> None:
        self.system = system
        self.tenants = {t.tenant_id: t for t in tenants}
        self.keys = keys


@pytest.fixture(scope="module")
async def running(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    state: Path = tmp_path_factory.mktemp("system")
    connectors = ("slack", "gmail", "notion", "jira")
    stack_env = await ensure_pool_roles(stack_env, connectors)
    system = LocalSystem(
        state,
        connectors=connectors,
        stack_env=stack_env,
        env={"SWITCHYARD_TOPIC_PREFIX": f"e2e{uuid.uuid4().hex[:8]}.", "SWITCHYARD_TOPIC_PARTITIONS": "3"},
    )
    try:
        await system.start()
        tenants = demo_tenants(system.emulator_url)
        keys = await system.provision(tenants)
        yield RunningSystem(system, tenants, keys)
    finally:
        system.stop()
