"""``switchyard ingress``: run the MCP + REST ingress."""

from __future__ import annotations

import argparse

from aiohttp import web

from core.event_loop import use_event_loop
from core.heap import settle_heap as settle_process_heap
from core.logs import configure_logging
from core.settings import Settings, load_settings
from core.telemetry import setup_tracing

from .app import IngressOptions, create_app

__all__ = ["add_arguments", "run", "settle_heap"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = IngressOptions()
    parser.add_argument("--host", help="listen address (default: SWITCHYARD_INGRESS_HOST)")
    parser.add_argument("--port", type=int, help="listen port (default: SWITCHYARD_INGRESS_PORT)")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--request-timeout", type=float, default=defaults.request_timeout)
    parser.add_argument("--publish-timeout", type=float, default=defaults.publish_timeout,
                        help="seconds to wait for the broker's acknowledgement before a 503")
    parser.add_argument("--failing-publish-timeout", type=float, default=defaults.failing_publish_timeout,
                        help="the same wait while no publish has been acknowledged since one failed")
    parser.add_argument("--rate", type=float, default=defaults.rate_per_second,
                        help="edge rate limit per tenant: commands (new batch items, cancellations) per second")
    parser.add_argument("--burst", type=int, default=defaults.burst)
    parser.add_argument("--results-capacity", type=int, default=defaults.results_capacity,
                        help="final results kept in memory (LRU)")
    parser.add_argument("--results-max-mib", type=int, default=defaults.results_max_bytes // 2**20,
                        help="MiB of final results kept in memory at most")
    parser.add_argument("--submitted-max-mib", type=int, default=defaults.submitted_max_bytes // 2**20,
                        help="MiB of this replica's accepted commands kept in memory at most")
    parser.add_argument("--results-lookback", type=float, default=defaults.results_lookback,
                        help="seconds of the results topic read back at start")
    parser.add_argument("--no-create-topics", action="store_true",
                        help="do not create missing topics at start")


async def settle_heap(app: web.Application) -> None:
    """Once started (Kafka clients included), settle the heap (``core.heap``)."""
    settle_process_heap()


async def _app(settings: Settings, options: IngressOptions) -> web.Application:
    app = await create_app(settings, options)
    # Runs after the Kafka clients' start (cleanup_ctx is first): the heap is settled.
    app.on_startup.append(settle_heap)
    return app


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    use_event_loop(settings.event_loop)
    configure_logging("ingress", settings.log_level)
    setup_tracing("switchyard-ingress", settings.otlp_endpoint)
    options = IngressOptions(
        max_body_bytes=args.max_body_bytes,
        request_timeout=args.request_timeout,
        publish_timeout=args.publish_timeout,
        failing_publish_timeout=args.failing_publish_timeout,
        rate_per_second=args.rate,
        burst=args.burst,
        results_capacity=args.results_capacity,
        results_max_bytes=args.results_max_mib * 2**20,
        submitted_max_bytes=args.submitted_max_mib * 2**20,
        results_lookback=args.results_lookback,
        create_topics=not args.no_create_topics,
    )
    web.run_app(
        _app(settings, options),
        host=args.host or settings.ingress_host,
        port=args.port if args.port is not None else settings.ingress_port,
        access_log=None,  # error_middleware writes one structured line per request
        print=None,
        handler_cancellation=True,
        # On SIGTERM: requests in flight (waits up to 30 s, --request-timeout 40 s) may
        # finish; the chart gives the pod 5 s + this before it is killed.
        shutdown_timeout=45.0,
    )
    return 0
