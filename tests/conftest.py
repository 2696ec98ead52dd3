"""Session fixtures: one real local stack (Kafka + OpenBao) per test session.

When ``SWITCHYARD_KAFKA_BOOTSTRAP`` and ``VAULT_ADDR`` (with ``VAULT_TOKEN``) are set,
tests use those servers; otherwise the session starts its own stack with
``switchyard.stack`` on free ports and stops it at the end. Each test gets its own
topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import hypothesis
import pytest

from core.settings import Settings, load_settings
from core.vault import VaultAdmin

# hypothesis is imported here, at start-up, not lazily by its plugin at the session's end:
# on CPython 3.11.7 pytest's assertion rewriter then parsed it after the MCP tests' deeply
# nested bodies and crashed in the terminal summary ("AST constructor recursion depth
# mismatch") whenever a run selected no hypothesis test.

# No per-example deadline: tests assert behaviour, never time (benchmarks measure that),
# and hypothesis's default 200 ms is one: a property test failed once in a loaded run
# here, and 20,000 of its examples without a deadline found no wrong result.
hypothesis.settings.register_profile("switchyard", deadline=None)
hypothesis.settings.load_profile("switchyard")

# Variables passed through when the session reuses running servers.
_STACK_VARS = (
    "SWITCHYARD_KAFKA_BOOTSTRAP",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "SWITCHYARD_REPLICATION_FACTOR",
    "SWITCHYARD_ADMIN_TOKEN",
)
# Stacks this session started; pytest_sessionfinish and atexit stop whatever is left.
_OWN_STACKS: list[Any] = []


def _stop_own_stacks() -> None:
    while _OWN_STACKS:
        _OWN_STACKS.pop().down()


def _reap_abandoned_stacks(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stop stacks left by earlier sessions that were killed before their teardown ran.

    Only stacks whose owning pytest process is gone are touched, so a concurrent
    session's stack survives.
    """
    from switchyard.stack import LocalStack

    runs = tmp_path_factory.getbasetemp().parent
    LocalStack.reap_abandoned(path.parent for path in runs.glob("pytest-*/stack*/stack.json"))


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables that point at the session's Kafka and OpenBao."""
    if os.environ.get("SWITCHYARD_KAFKA_BOOTSTRAP") and os.environ.get("VAULT_ADDR"):
        yield {
            key: os.environ[key]
            for key in os.environ
            if key in _STACK_VARS
            or key.startswith(("SWITCHYARD_VAULT_ROLE_ID_", "SWITCHYARD_VAULT_SECRET_ID_"))
        }
        return
    from switchyard.stack import LocalStack

    _reap_abandoned_stacks(tmp_path_factory)
    stack = LocalStack(state_dir=tmp_path_factory.mktemp("stack"), brokers=1)
    _OWN_STACKS.append(stack)
    atexit.register(_stop_own_stacks)
    try:
        env = stack.up()
        yield env
    finally:
        _stop_own_stacks()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Fixture finalizers normally ran already; this covers an interrupted session.
    _stop_own_stacks()


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
