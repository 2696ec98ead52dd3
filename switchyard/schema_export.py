"""``switchyard schemas export [--check]``: JSON Schemas of the public wire models.

The files live in ``schemas/json/`` (inside the ``schemas`` package, so an installed
wheel ships them too) and are committed: downstream services that consume the results
topic read them without importing Python. Output is deterministic (sorted keys, two
space indent, trailing newline), so ``--check`` can compare bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

import schemas
from core import jsonutil
from schemas import ApiKeyRecord, Command, Result, RoutedCommand, TaskCancel, WorkspaceConfig

__all__ = ["MODELS", "SCHEMA_DIR", "add_arguments", "render", "run", "stale_files", "write"]

SCHEMA_DIR = Path(schemas.__file__).resolve().parent / "json"

# File stem → model. Renaming a stem breaks downstream consumers: add, never rename.
MODELS: dict[str, type[BaseModel]] = {
    "command": Command,
    "routed_command": RoutedCommand,
    "result": Result,
    "workspace_config": WorkspaceConfig,
    "api_key_record": ApiKeyRecord,
    "task_cancel": TaskCancel,
}

# Files whose readers are downstream services (the results topic's consumers): their
# objects are open, so a field a later release adds (schema_version stays 1 while changes
# are additive) does not fail a consumer that validates with the file it has. The
# models themselves stay strict: Switchyard's own processes refuse what they cannot read.
OPEN_FOR_READERS = frozenset({"result"})
_OPEN_NOTE = (
    "Objects are open: a later release may add optional fields (schema_version stays 1 "
    "while changes are additive); ignore the fields you do not know."
)

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def render(model: type[BaseModel], *, open_objects: bool = False) -> bytes:
    """The model's JSON Schema as deterministic bytes (``open_objects``: for readers)."""
    schema: dict[str, Any] = {"$schema": _DIALECT, **model.model_json_schema()}
    if open_objects:
        schema = jsonutil.open_objects(schema)
        schema["$comment"] = _OPEN_NOTE
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _expected() -> dict[str, bytes]:
    return {
        f"{stem}.schema.json": render(model, open_objects=stem in OPEN_FOR_READERS)
        for stem, model in MODELS.items()
    }


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files in ``directory`` that are missing or differ from the models."""
    stale = []
    for name, content in _expected().items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            stale.append(name)
    return stale


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema file; return the names that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = stale_files(directory)
    for name, content in _expected().items():
        if name in changed:
            (directory / name).write_bytes(content)
    return changed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="write schemas/json/*.schema.json")
    export.add_argument(
        "--check", action="store_true", help="exit 1 when committed files are stale"
    )
    export.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=f"default: {SCHEMA_DIR}")


def run(args: argparse.Namespace) -> int:
    if args.check:
        stale = stale_files(args.dir)
        if stale:
            print(
                f"stale JSON Schemas in {args.dir}: {', '.join(stale)}; "
                "run `switchyard schemas export`",
                file=sys.stderr,
            )
            return 1
        print(f"JSON Schemas in {args.dir} are up to date")
        return 0
    changed = write(args.dir)
    print(
        f"wrote {', '.join(changed)}"
        if changed
        else f"JSON Schemas in {args.dir} already up to date"
    )
    return 0
