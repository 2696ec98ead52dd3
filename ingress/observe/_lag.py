"""Consumer lag of the worker pools, read from Kafka (works in any deployment).

Each pool's group is ``<prefix>workers.<connector>`` and reads its connector topic and
the retry tier topics. The answer is cached for ``ttl`` seconds, so many dashboards
polling at once cost one round of offset requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka.errors import KafkaError

from core.errors import KafkaUnavailable
from core.kafka import make_admin, make_consumer, start_client
from core.metrics import group_lag, sum_by_topic
from core.settings import Settings
from schemas import CONNECTORS

__all__ = ["KafkaLagSource"]

logger = logging.getLogger(__name__)


class KafkaLagSource:
    """Lag per connector pool (records not yet consumed by its group), cached."""

    def __init__(
        self, settings: Settings, connectors: tuple[str, ...] = CONNECTORS, *, ttl: float = 5.0
    ) -> None:
        self.settings = settings
        self.connectors = connectors
        self.ttl = ttl
        self._admin: Any = None
        self._reader: Any = None
        self._cached: tuple[float, list[dict[str, Any]]] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect the admin client and an offsets reader.

        Raises:
            KafkaUnavailable: the broker cannot be reached.
        """
        self._admin = make_admin(self.settings)
        await start_client(self._admin, what="lag admin")
        self._reader = make_consumer(self.settings, group_id=None)
        await start_client(self._reader, what="lag reader")

    async def stop(self) -> None:
        for client, stop in ((self._reader, "stop"), (self._admin, "close")):
            if client is not None:
                with contextlib.suppress(KafkaError, OSError, RuntimeError):
                    await getattr(client, stop)()
        self._admin = self._reader = None

    async def pools(self) -> list[dict[str, Any]]:
        """``[{"connector", "group", "lag", "by_topic"}]`` for every pool (cached ``ttl`` s)."""
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
            rows = [await self._pool(name) for name in self.connectors]
            self._cached = (time.monotonic(), rows)
            return rows

    async def _pool(self, connector: str) -> dict[str, Any]:
        topics = self.settings.topics
        group = f"{self.settings.topic_prefix}workers.{connector}"
        names = topics.pool_sources(connector)
        row: dict[str, Any] = {"connector": connector, "group": group, "lag": None, "by_topic": {}}
        if self._admin is None:
            return row
        try:
            lag = await group_lag(self._admin, self._reader, group, names)
        except KafkaUnavailable:
            logger.warning("could not read the lag of %s", group)
            return row
        by_topic = sum_by_topic(lag)
        row.update(lag=sum(by_topic.values()), by_topic=by_topic)
        return row
