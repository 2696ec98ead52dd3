"""Session fixtures: one real local stack (Kafka + OpenBao) per test session.

When ``SWITCHYARD_KAFKA_BOOTSTRAP`` and ``VAULT_ADDR`` (with ``VAULT_TOKEN``) are set,
tests use those servers; otherwise the session starts its own stack with
``switchyard.stack`` on free ports and stops it at the end. Each test gets its own
topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from core.settings import Settings, load_settings
from core.vault import VaultAdmin


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables that point at the session's Kafka and OpenBao."""
    if os.environ.get("SWITCHYARD_KAFKA_BOOTSTRAP") and os.environ.get("VAULT_ADDR"):
        yield {
            key: os.environ[key]
            for key in ("SWITCHYARD_KAFKA_BOOTSTRAP", "VAULT_ADDR", "VAULT_TOKEN")
            if key in os.environ
        }
        return
    from switchyard.stack import LocalStack

    stack = LocalStack(state_dir=tmp_path_factory.mktemp("stack"), brokers=1)
    try:
        env = stack.up()
        yield env
    finally:
        stack.down()


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(stack_env: dict[str, str]) -> Settings:
    """Settings for one test: the session's servers, a topic prefix of its own."""
    return load_settings(
        stack_env,
        topic_prefix=f"{unique()}.",
        topic_partitions=3,
        replication_factor=1,
    )


@pytest.fixture
async def vault_admin(stack_env: dict[str, str]) -> AsyncIterator[VaultAdmin]:
    admin = VaultAdmin(stack_env["VAULT_ADDR"], stack_env["VAULT_TOKEN"])
    try:
        yield admin
    finally:
        admin.close()
