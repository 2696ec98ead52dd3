"""``switchyard stack up | down | status``: the local Kafka + OpenBao stack, detached.

``up`` leaves the servers running after the command returns; their pids and ports
go to ``<state-dir>/stack.json`` and the variables other processes read to
``<state-dir>/stack.env`` (``source`` it). Secret values are written only to that
file (mode 0600), never printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.settings import load_settings

from ._errors import StackError
from ._local import LocalStack

__all__ = ["add_arguments", "run"]

_SECRET_MARKERS = ("TOKEN", "SECRET")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="start Kafka and OpenBao (detached) and print the env")
    up.add_argument("--brokers", type=int, default=1, help="Kafka nodes: 1, or 3 for fault tests")
    up.add_argument(
        "--kafka-port", type=int, default=None, help="port of the first broker (default: free)"
    )
    up.add_argument("--vault-port", type=int, default=None, help="OpenBao port (default: free)")
    up.add_argument("--heap", default="512m", help="JVM -Xmx per Kafka node (default 512m)")
    down = sub.add_parser("down", help="stop everything `up` started")
    status = sub.add_parser("status", help="say what runs where")
    for command in (up, down, status):
        command.add_argument(
            "--state-dir", type=Path, default=None, help="default: <SWITCHYARD_HOME>/stack"
        )


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    state_dir = args.state_dir or settings.home / "stack"
    # Connection refusals while the broker boots are expected; aiokafka would print each one.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        if args.action == "up":
            return _up(args, state_dir, settings.home)
        if args.action == "down":
            return _down(state_dir)
        return _status(state_dir)
    except StackError as exc:
        print(f"switchyard stack: {exc}", file=sys.stderr)
        return 1


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _up(args: argparse.Namespace, state_dir: Path, home: Path) -> int:
    stack = LocalStack(
        state_dir,
        brokers=args.brokers,
        home=home,
        kafka_port=args.kafka_port,
        vault_port=args.vault_port,
        heap=args.heap,
        progress=_progress,
        detached=True,
    )
    if stack.running():
        print(f"the stack already runs from {stack.state_dir} (env file: {stack.env_file})")
        return 0
    env = stack.up()
    print(f"stack is up ({args.brokers} Kafka node{'s' if args.brokers > 1 else ''} + OpenBao):")
    for key, value in env.items():
        shown = "*** (in the env file)" if any(m in key for m in _SECRET_MARKERS) else value
        print(f"  {key}={shown}")
    print(f"env file: {stack.env_file}")
    print(f"use it:   source {stack.env_file}")
    print(f"stop it:  switchyard stack down --state-dir {stack.state_dir}")
    return 0


def _down(state_dir: Path) -> int:
    stack = LocalStack(state_dir)
    if stack.state is None:
        print(f"no stack recorded in {stack.state_dir}; nothing to stop")
        return 0
    stopped = stack.down()
    if stopped:
        print("stopped: " + ", ".join(stopped))
    else:
        print("nothing was running; cleared the stale records")
    return 0


def _status(state_dir: Path) -> int:
    status = LocalStack(state_dir).status()
    if not status["processes"]:
        print(f"not running (no stack recorded in {status['state_dir']})")
        return 1
    every = all(p["alive"] for p in status["processes"])
    verdict = "running" if every else "degraded" if status["running"] else "stopped"
    print(f"{verdict}: state dir {status['state_dir']}, env file {status['env_file']}")
    for p in status["processes"]:
        where = p["address"] + (f" (controller {p['controller']})" if "controller" in p else "")
        state = "alive" if p["alive"] else "dead"
        print(f"  {p['name']:<13} pid {p['pid'] or '-':<8} {state:<6} {where}")
    print(f"  bootstrap: {status['bootstrap']}  vault: {status['vault_addr']}")
    return 0 if every else 1
