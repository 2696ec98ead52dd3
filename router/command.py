"""``switchyard router``: run the faust router worker in this process.

With ``SWITCHYARD_METRICS_PORT`` set it serves ``/metrics``, ``/healthz`` and ``/readyz``
there (ready: Kafka answers and the router has started: topics, producer, config view).
SIGTERM and SIGINT stop it cleanly: the worker stops the agent, commits the offsets of
finished batches (an interrupted batch is withheld and replayed later) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="faust's data directory (default: <SWITCHYARD_HOME>/router/<topic prefix>)",
    )


def run(args: argparse.Namespace) -> int:
    import faust

    from core.event_loop import use_event_loop
    from core.logs import configure_logging
    from core.metrics import Metrics
    from core.settings import load_settings
    from core.telemetry import setup_tracing

    from .app import create_app

    settings = load_settings()
    use_event_loop(settings.event_loop)
    configure_logging("router", settings.log_level)
    setup_tracing("switchyard-router", settings.otlp_endpoint)
    data_dir = args.data_dir or settings.home / "router" / settings.topic_prefix.rstrip(".")
    data_dir.mkdir(parents=True, exist_ok=True)
    # faust binds to the current loop; make it a fresh one we own.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Metrics and health are served on SWITCHYARD_METRICS_PORT when it is set.
    app, runtime = create_app(settings, data_dir=data_dir, metrics=Metrics("router"))
    worker = faust.Worker(
        app,
        runtime,
        loop=loop,
        loglevel=settings.log_level,
        override_logging=False,
        quiet=True,
        redirect_stdouts=False,
    )
    # faust's start-up spinner writes terminal codes when it finishes, tty or not; they
    # would open a log line that is then no longer JSON.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
