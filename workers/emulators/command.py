"""``switchyard emulators``: serve the local API emulators on one port."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from core.event_loop import use_event_loop
from core.settings import load_settings

from ._state import EmulatorState
from .app import make_app

__all__ = ["add_arguments", "load_tokens", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="port to bind (default 8900)")
    parser.add_argument(
        "--tokens",
        type=Path,
        help='JSON file: [{"connector", "token", "tenant", "refresh_token"?, "client_id"?, '
        '"client_secret"?}, ...] or {"tokens": [...]}',
    )
    parser.add_argument(
        "--no-dedup",
        action="store_true",
        help="make the webhook endpoint ignore Idempotency-Key (every call is an effect)",
    )


def load_tokens(path: Path) -> list[dict[str, Any]]:
    """Token entries from a JSON file.

    Raises:
        ValueError: when the file is not a list of objects (or ``{"tokens": [...]}``).
    """
    data = orjson.loads(path.read_bytes())
    entries = data.get("tokens") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ValueError(f"{path}: expected a list of token entries")
    return entries


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_event_loop(load_settings().event_loop)
    tokens = load_tokens(args.tokens) if args.tokens else []
    state = EmulatorState(tokens, dedup=() if args.no_dedup else ("http",))
    logger.info("emulators: %d tokens loaded", len(tokens))
    # No access log: the emulator serves benchmarks at thousands of calls per second.
    web.run_app(
        make_app(state),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda line: logger.info("emulators: %s", line),
    )
    return 0
