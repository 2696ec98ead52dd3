"""Per-tenant observability of the ingress: results-topic aggregates and their REST routes.

Mount on the ingress app, after the core routes::

    from ingress import observe
    observe.setup(app, services, settings)

``setup`` starts an aggregator that follows the results topic (and a Kafka lag reader
for the worker pools) with the app, and adds the routes listed in ``_routes``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from core.settings import Settings
from ingress.contracts import Services

from ._aggregator import CommandSummary, ResultsAggregator, TenantStats
from ._lag import KafkaLagSource
from ._routes import OBSERVER, Observer, add_observe_routes, identify
from ._stats import LatencyHistogram, Series

__all__ = [
    "OBSERVER",
    "CommandSummary",
    "KafkaLagSource",
    "LatencyHistogram",
    "Observer",
    "ResultsAggregator",
    "Series",
    "TenantStats",
    "identify",
    "setup",
]


def setup(
    app: web.Application,
    services: Services,
    settings: Settings,
    *,
    aggregator: ResultsAggregator | None = None,
    lag: KafkaLagSource | None | bool = True,
    lookback: float = 900.0,
    max_tenants: int = 1_000,
) -> Observer:
    """Add the observability routes to ``app``; its Kafka readers start and stop with it.

    ``lag=True`` reads worker-pool lag from Kafka; pass a source of your own, or False.
    """
    if aggregator is None:
        aggregator = ResultsAggregator(settings, lookback=lookback, max_tenants=max_tenants)
    lag_source = KafkaLagSource(settings) if lag is True else (lag or None)
    observer = Observer(settings=settings, services=services, aggregator=aggregator, lag=lag_source)
    app[OBSERVER] = observer

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await aggregator.start()
            stack.push_async_callback(aggregator.stop)
            if lag_source is not None:
                await lag_source.start()
                stack.push_async_callback(lag_source.stop)
            yield

    app.cleanup_ctx.append(context)
    add_observe_routes(app)
    return observer
