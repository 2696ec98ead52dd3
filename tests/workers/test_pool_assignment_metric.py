"""Each worker process reports how many partitions of its pool it holds, so an operator
can see the share of each replica (and the idle ones) as pools scale."""

from __future__ import annotations

import pytest
from _runtime_support import Upstream, eventually, pool_running

from core.metrics import Metrics
from workers._pool import PoolOptions

pytestmark = pytest.mark.integration


def _options() -> PoolOptions:  # a fresh instance id (transactional id) per pool
    return PoolOptions(tier_delays=(0.2,), revoke_grace=1.0)


async def test_each_pool_reports_the_partitions_it_holds(settings, vault_admin) -> None:
    partitions = settings.topic_partitions
    group, topic = f"{settings.topic_prefix}workers.echo", settings.topics.connector("echo")

    def held(metrics: Metrics) -> float:
        return metrics.registry.get_sample_value(
            "switchyard_assigned_partitions", {"group": group, "topic": topic}
        ) or 0.0

    upstream = Upstream()
    async with upstream.running():
        alone, joining = Metrics("worker-echo"), Metrics("worker-echo")
        async with pool_running(settings, vault_admin, upstream, options=_options(), metrics=alone):
            await eventually(lambda: held(alone) == partitions, within=60)
            async with pool_running(settings, vault_admin, upstream, options=_options(), metrics=joining):
                await eventually(
                    lambda: held(alone) + held(joining) == partitions and 0 < held(joining) < partitions,
                    within=60,
                )
            await eventually(lambda: held(alone) == partitions, within=60)  # the other left
        tier = settings.topics.retry("echo", 0)
        assert alone.registry.get_sample_value(
            "switchyard_assigned_partitions", {"group": group, "topic": tier}
        ) == partitions
