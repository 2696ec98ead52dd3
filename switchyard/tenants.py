"""``switchyard tenants``: publish, list and delete workspace configurations.

``apply -f FILE`` reads YAML or JSON holding one workspace, a list of them, or
``{"workspaces": [...]}``; every workspace is validated (the wire model, each action's
input JSON Schema, each argument mapping) before anything is published, then written
to the compacted config topic keyed ``workspace:<tenant>:<space>``. Routers pick the
change up for their next command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import TopicPartition
from pydantic import TypeAdapter, ValidationError

from core.errors import ConfigurationError, KafkaUnavailable
from core.kafka import ensure_topics, make_admin, make_consumer, make_producer, start_client
from core.settings import Settings, load_settings
from router import workspace_problem
from schemas import ConfigRecord, Headers, WorkspaceConfig, workspace_key

__all__ = ["add_arguments", "list_workspaces", "load_workspaces", "publish_workspaces", "run"]

_RECORD: TypeAdapter[ConfigRecord] = TypeAdapter(ConfigRecord)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    apply = sub.add_parser("apply", help="validate and publish workspaces from a YAML/JSON file")
    apply.add_argument("-f", "--file", type=Path, required=True)
    apply.add_argument("--dry-run", action="store_true", help="validate only")
    listing = sub.add_parser("list", help="list the workspaces on the config topic")
    listing.add_argument("--json", action="store_true", help="print full records as JSON lines")
    delete = sub.add_parser("delete", help="delete a workspace (tombstone)")
    delete.add_argument("--tenant", required=True)
    delete.add_argument("--space", required=True)


def load_workspaces(path: Path) -> list[WorkspaceConfig]:
    """Parse and fully validate the workspaces in ``path``.

    Raises:
        ConfigurationError: naming the first invalid workspace and why.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read ({exc})") from exc
    if isinstance(data, dict) and "workspaces" in data:
        data = data["workspaces"]
    items = data if isinstance(data, list) else [data]
    workspaces: list[WorkspaceConfig] = []
    for index, item in enumerate(items):
        try:
            workspace = WorkspaceConfig.model_validate(item)
        except ValidationError as exc:
            raise ConfigurationError(f"{path}: workspace #{index + 1}: {exc}") from exc
        problem = workspace_problem(workspace)
        if problem is not None:
            raise ConfigurationError(f"{workspace.tenant_id}/{workspace.space_id} {problem}")
        workspaces.append(workspace)
    keys = [workspace_key(w.tenant_id, w.space_id) for w in workspaces]
    if len(keys) != len(set(keys)):
        raise ConfigurationError(f"{path}: a workspace appears twice")
    return workspaces


async def _ensure_config_topic(settings: Settings) -> None:
    topic = settings.topics.config
    await ensure_topics(settings, [topic], configs={topic: {"cleanup.policy": "compact"}})


async def publish_workspaces(settings: Settings, workspaces: list[WorkspaceConfig]) -> None:
    """Write ``workspaces`` to the config topic and wait for the broker's acks.

    Raises:
        KafkaUnavailable: when the broker cannot be reached.
    """
    await _ensure_config_topic(settings)
    producer = make_producer(settings)
    await start_client(producer, what="tenants apply")
    try:
        futures = [
            await producer.send(
                settings.topics.config,
                workspace.to_bytes(),
                key=workspace_key(workspace.tenant_id, workspace.space_id).encode(),
                headers=[
                    (Headers.KIND, b"workspace"),
                    (Headers.TENANT, workspace.tenant_id.encode()),
                ],
            )
            for workspace in workspaces
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def delete_workspace(settings: Settings, tenant_id: str, space_id: str) -> None:
    """Publish a tombstone for one workspace.

    Raises:
        KafkaUnavailable: when the broker cannot be reached.
    """
    await _ensure_config_topic(settings)
    producer = make_producer(settings)
    await start_client(producer, what="tenants delete")
    try:
        await producer.send_and_wait(
            settings.topics.config, None, key=workspace_key(tenant_id, space_id).encode()
        )
    finally:
        await producer.stop()


async def list_workspaces(settings: Settings, *, limit_s: float = 30.0) -> list[WorkspaceConfig]:
    """Read the config topic to its current end; return the live workspaces.

    Raises:
        KafkaUnavailable: when the broker cannot be reached.
        TimeoutError: when the topic cannot be read within ``limit_s``.
    """
    await _ensure_config_topic(settings)
    consumer = make_consumer(settings, group_id=None)
    await start_client(consumer, what="tenants list")
    found: dict[bytes, WorkspaceConfig] = {}
    try:
        async with asyncio.timeout(limit_s):
            parts = await _partitions(settings, settings.topics.config)
            tps = [TopicPartition(settings.topics.config, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        _apply(found, record.key, record.value)
                remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return sorted(found.values(), key=lambda w: (w.tenant_id, w.space_id))


async def _partitions(settings: Settings, topic: str) -> list[int]:
    admin = make_admin(settings)
    await start_client(admin, what="tenants admin")
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described[0]["partitions"]) if described else []


def _apply(found: dict[bytes, WorkspaceConfig], key: bytes | None, value: bytes | None) -> None:
    if key is None or not key.startswith(b"workspace:"):
        return
    if value is None:
        found.pop(key, None)
        return
    try:
        record = _RECORD.validate_json(value)
    except ValidationError:
        return
    if isinstance(record, WorkspaceConfig):
        found[key] = record


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        if args.action == "apply":
            workspaces = load_workspaces(args.file)
            if not args.dry_run:
                asyncio.run(publish_workspaces(settings, workspaces))
            verb = "valid" if args.dry_run else "applied"
            for w in workspaces:
                print(f"{verb}: {w.tenant_id}/{w.space_id} v{w.version} ({len(w.actions)} actions)")
            return 0
        if args.action == "delete":
            asyncio.run(delete_workspace(settings, args.tenant, args.space))
            print(f"deleted: {args.tenant}/{args.space}")
            return 0
        workspaces = asyncio.run(list_workspaces(settings))
        for w in workspaces:
            if args.json:
                sys.stdout.write(w.to_bytes().decode() + "\n")
            else:
                connectors = ",".join(sorted(w.connectors)) or "-"
                actions = ",".join(a.name for a in w.actions) or "-"
                print(
                    f"{w.tenant_id}/{w.space_id}\tv{w.version}\tconnectors={connectors}\tactions={actions}"
                )
        return 0
    except ConfigurationError as exc:
        print(f"switchyard tenants: {exc}", file=sys.stderr)
        return 2
    except KafkaUnavailable as exc:  # one line, not a traceback: nothing was written
        print(f"switchyard tenants: {exc} (SWITCHYARD_KAFKA_BOOTSTRAP={settings.kafka_bootstrap})", file=sys.stderr)
        return 1
