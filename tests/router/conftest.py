"""A router subprocess shared by the behaviour tests of one module (own topic prefix)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from _router_support import Outputs, RouterProcess, delete_topics, prepare_topics

from core.settings import Settings, load_settings


@pytest.fixture
async def own_settings(stack_env: dict[str, str]) -> AsyncIterator[Settings]:
    """Settings with a prefix of its own whose topics are deleted afterwards."""
    settings = load_settings(
        stack_env,
        topic_prefix=f"k{uuid.uuid4().hex[:10]}.",
        topic_partitions=3,
        replication_factor=1,
    )
    yield settings
    await delete_topics(settings)


@dataclass
class LiveRouter:
    settings: Settings
    process: RouterProcess
    outputs: Outputs


@pytest.fixture(scope="module")
async def live_router(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveRouter]:
    settings = load_settings(
        stack_env,
        topic_prefix=f"r{uuid.uuid4().hex[:10]}.",
        topic_partitions=3,
        replication_factor=1,
    )
    await prepare_topics(settings)
    # Outputs first: if it cannot start, no router process is left behind.
    outputs = await Outputs(settings).start()
    process = RouterProcess(settings, tmp_path_factory.mktemp("router")).start()
    try:
        yield LiveRouter(settings, process, outputs)
    finally:
        await outputs.stop()
        code = process.terminate()
        await delete_topics(settings)
        assert code == 0, process.story()
