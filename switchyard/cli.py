"""``switchyard`` command line. Each subcommand imports its component lazily."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

# name -> (module, help). Each module has ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("switchyard.stack.command", "start/stop the local Kafka + OpenBao stack"),
    "ingress": ("ingress.command", "run the MCP + REST ingress"),
    "router": ("router.command", "run the Faust router"),
    "worker": ("workers.command", "run a connector worker pool"),
    "emulators": ("workers.emulators.command", "run the local SaaS API emulators"),
    "tenants": ("switchyard.tenants", "apply, list and delete tenant workspaces (API keys: the admin API)"),
    "vault": ("switchyard.vault_setup", "bootstrap Vault roles and policies for the worker pools"),
    "topics": ("switchyard.topics", "create/update every topic the system uses"),
    "schemas": ("switchyard.schema_export", "export the JSON Schemas of the wire models"),
    "run": ("switchyard.run", "run the whole system locally with a demo"),
    "bench": ("bench.command", "run the benchmarks, print JSON"),
}


def _load(module_name: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
    import importlib

    module = importlib.import_module(module_name)
    return module.add_arguments, module.run


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.parse_args(argv)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    try:
        add_arguments, run = _load(module_name)
    except ModuleNotFoundError as exc:
        print(f"switchyard {name}: not available in this build ({exc.name})", file=sys.stderr)
        return 2
    command_parser = argparse.ArgumentParser(prog=f"switchyard {name}", description=help_text)
    add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
