"""``switchyard topics apply``: every topic the system uses, as code.

The desired state comes from :class:`core.settings.Settings` (prefix, partitions,
replication factor) plus the retention constants below. :func:`apply_topics` compares it
with the cluster and returns a :class:`Plan` with one action per topic:

- ``create``: the topic is missing;
- ``alter``: a managed config differs from the desired value (or, when asked, the topic
  has fewer partitions than wanted);
- ``ok``: nothing to do.

Partitions are increased only with ``increase_partitions=True`` and never decreased;
replication factor is never changed here (that needs a partition reassignment).

The router's table changelogs (``Topics.router_changelogs``) are managed here too: the
router writes each tenant's dedup and usage entries to the changelog partition numbered
like the tenant's commands partition, so a changelog needs at least as many partitions as
the commands topic, and faust co-partitions (gives the replica routing a partition the
same partition of each changelog) only topics with equal counts. So they are created
with, and with ``increase_partitions`` grown to, the count the commands topic has after
the apply, even when that is not the settings' (it may have been grown outside this
command); the router refuses to start on a changelog with fewer.

Partition count of the config topic: its keys are ``workspace:<tenant>:<space>`` and
``api_key:<id>``, not the tenant id, so it cannot be co-partitioned with ``commands`` and
every reader must consume all of its partitions; any count is correct. It gets the same
count as every other topic because Faust creates and checks a table's changelog topic with
the app's ``topic_partitions``, so a router pointing a table at it never sees a mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from aiokafka.admin import NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError, for_code

from core.errors import ConfigurationError, KafkaUnavailable
from core.kafka import make_admin
from core.logs import configure_logging
from core.settings import Settings, load_settings
from schemas import CONNECTORS

__all__ = [
    "CANCELS_RETENTION_MS",
    "DAY_MS",
    "DLQ_RETENTION_MS",
    "LOGS_RETENTION_MS",
    "RESULTS_RETENTION_MS",
    "Plan",
    "Retention",
    "TopicAction",
    "TopicSpec",
    "add_arguments",
    "apply_topics",
    "desired_topics",
    "run",
]

DAY_MS = 24 * 60 * 60 * 1000
# How long each kind of record stays readable. Results are read back by pollers and
# downstream services; dead letters need time for a human to look; logs are for live views.
RESULTS_RETENTION_MS = 7 * DAY_MS
DLQ_RETENTION_MS = 14 * DAY_MS
LOGS_RETENTION_MS = 3 * DAY_MS
# Cancellations matter while their command may still wait: at most its deadline (1 day).
CANCELS_RETENTION_MS = 2 * DAY_MS

# Kafka error code for a topic created by someone else between our look and our create.
_TOPIC_ALREADY_EXISTS = 36
# DescribeConfigs source of a config set on the topic itself (the others are defaults).
_DYNAMIC_TOPIC_CONFIG = 1
_CONVERGE_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 30.0

ActionKind = Literal["create", "alter", "ok"]


@dataclass(frozen=True, slots=True)
class Retention:
    """Retention (ms) of the topics that have one; defaults are the module constants."""

    results_ms: int = RESULTS_RETENTION_MS
    dlq_ms: int = DLQ_RETENTION_MS
    logs_ms: int = LOGS_RETENTION_MS


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """The desired state of one topic."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


@dataclass(slots=True)
class TopicAction:
    """What :func:`apply_topics` does (or would do) to one topic."""

    name: str
    action: ActionKind
    partitions: int
    current_partitions: int | None = None
    # config name -> [current effective value or None, desired value]
    config_changes: dict[str, list[str | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.name,
            "action": self.action,
            "partitions": self.partitions,
            "current_partitions": self.current_partitions,
            "config_changes": self.config_changes,
            "warnings": self.warnings,
        }


@dataclass(slots=True)
class Plan:
    """One action per topic, in :meth:`schemas.Topics.all_for` order."""

    actions: list[TopicAction]
    dry_run: bool

    @property
    def changes(self) -> list[TopicAction]:
        return [a for a in self.actions if a.action != "ok"]

    @property
    def is_noop(self) -> bool:
        return not self.changes

    def by_name(self) -> dict[str, TopicAction]:
        return {a.name: a for a in self.actions}

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "changes": len(self.changes),
            "topics": [a.to_dict() for a in self.actions],
        }

    def render(self) -> str:
        """Human-readable plan: one line per topic, warnings indented below."""
        lines = []
        for a in self.actions:
            detail = ""
            if a.action == "create":
                detail = f" partitions={a.partitions}"
            elif a.action == "alter":
                parts = [f"{k}: {old} -> {new}" for k, (old, new) in a.config_changes.items()]
                if a.current_partitions is not None and a.current_partitions < a.partitions:
                    parts.append(f"partitions: {a.current_partitions} -> {a.partitions}")
                detail = " " + ", ".join(parts)
            lines.append(f"{a.action:<6} {a.name}{detail}")
            lines.extend(f"       warning: {w}" for w in a.warnings)
        verb = "would change" if self.dry_run else "changed"
        lines.append(f"{len(self.changes)} of {len(self.actions)} topics {verb}")
        return "\n".join(lines)


def desired_topics(
    settings: Settings,
    *,
    connectors: tuple[str, ...] = CONNECTORS,
    retention: Retention | None = None,
) -> list[TopicSpec]:
    """Every topic the system uses with its desired partitions, replication and configs."""
    retention = retention or Retention()
    topics = settings.topics
    rf = settings.replication_factor
    # With RF 3 and min ISR 2 an acks=all write survives one broker down; RF 1 or 2 keeps
    # writes possible with the brokers it has.
    base = {"min.insync.replicas": str(min(2, rf))}
    special: dict[str, dict[str, str]] = {
        topics.config: {"cleanup.policy": "compact"},
        **{name: {"cleanup.policy": "compact"} for name in topics.router_changelogs},
        topics.results: {"cleanup.policy": "delete", "retention.ms": str(retention.results_ms)},
        topics.dead_letters: {"cleanup.policy": "delete", "retention.ms": str(retention.dlq_ms)},
        topics.logs: {"cleanup.policy": "delete", "retention.ms": str(retention.logs_ms)},
        topics.cancels: {"cleanup.policy": "delete", "retention.ms": str(CANCELS_RETENTION_MS)},
    }
    return [
        TopicSpec(
            name=name,
            partitions=settings.topic_partitions,
            replication_factor=rf,
            configs={**base, **special.get(name, {})},
        )
        for name in topics.all_for(connectors)
    ]


async def apply_topics(
    settings: Settings,
    *,
    dry_run: bool = False,
    increase_partitions: bool = False,
    retention: Retention | None = None,
    connectors: tuple[str, ...] = CONNECTORS,
) -> Plan:
    """Bring every topic to its desired state (or only plan it with ``dry_run``).

    Idempotent: a second call right after the first returns a plan with no changes.
    Configs set on a topic by hand and not managed here are kept on alter.

    Raises:
        KafkaUnavailable: when the broker cannot be reached.
        ConfigurationError: when the broker refuses a create, alter or partition change
            (for example a replication factor above the number of brokers).
    """
    specs = desired_topics(settings, connectors=connectors, retention=retention)
    admin = make_admin(settings)
    await _start(admin)
    try:
        current = await _describe(admin, [s.name for s in specs])
        specs = _changelogs_follow_commands(specs, current, settings, increase_partitions)
        actions = [_plan_one(spec, current.get(spec.name), increase_partitions) for spec in specs]
        plan = Plan(actions=actions, dry_run=dry_run)
        if not dry_run and plan.changes:
            await _execute(admin, specs, plan, current)
            await _await_converged(admin, specs, increase_partitions)
        return plan
    finally:
        await admin.close()


def _changelogs_follow_commands(
    specs: list[TopicSpec], current: dict[str, _Current], settings: Settings, increase: bool
) -> list[TopicSpec]:
    """``specs`` with the router's changelogs wanting the partitions the commands topic
    has after this apply: when it exists, its current count unless partitions are added
    (which never decreases it). faust co-partitions topics only of equal counts."""
    commands = current.get(settings.topics.commands)
    if commands is None:
        return specs
    wanted = max(commands.partitions, settings.topic_partitions) if increase else commands.partitions
    changelogs = set(settings.topics.router_changelogs)
    return [replace(s, partitions=wanted) if s.name in changelogs else s for s in specs]


async def _start(admin: Any) -> None:
    # core.kafka.start_client calls stop() on failure, which the admin client lacks (close()).
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            await admin.start()
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(KafkaError, OSError, RuntimeError):
            await admin.close()
        raise KafkaUnavailable(f"cannot reach Kafka ({type(exc).__name__})") from exc


@dataclass(slots=True)
class _Current:
    partitions: int
    replication_factor: int
    effective: dict[str, str]
    dynamic: dict[str, str]


async def _describe(admin: Any, names: list[str], *, settling: bool = False) -> dict[str, _Current]:
    """The current shape and configs of ``names`` that exist. While ``settling`` (just
    applied), a topic the answering broker does not know yet reads as absent, not as an
    error: on several brokers a new topic reaches each one's metadata at its own pace."""
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    described = await admin.describe_topics(present)
    shapes: dict[str, tuple[int, int]] = {}
    for topic in described:
        if topic["error_code"] == 0 and topic["partitions"]:
            parts = topic["partitions"]
            shapes[topic["topic"]] = (len(parts), len(parts[0]["replicas"]))
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in shapes]
    out: dict[str, _Current] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if settling and resource["error_code"] == UnknownTopicOrPartitionError.errno:
                continue
            _raise_for(resource["error_code"], resource["error_message"], "describe")
            name = resource["resource_name"]
            entries = resource["config_entries"]
            partitions, rf = shapes[name]
            out[name] = _Current(
                partitions=partitions,
                replication_factor=rf,
                effective={e["config_names"]: e["config_value"] for e in entries},
                dynamic={
                    e["config_names"]: e["config_value"]
                    for e in entries
                    if e["config_source"] == _DYNAMIC_TOPIC_CONFIG and not e["is_sensitive"]
                },
            )
    return out


def _plan_one(spec: TopicSpec, current: _Current | None, increase: bool) -> TopicAction:
    if current is None:
        return TopicAction(
            name=spec.name,
            action="create",
            partitions=spec.partitions,
            config_changes={key: [None, value] for key, value in spec.configs.items()},
        )
    action = TopicAction(
        name=spec.name,
        action="ok",
        partitions=spec.partitions,
        current_partitions=current.partitions,
    )
    for key, want in spec.configs.items():
        have = current.effective.get(key)
        if have != want:
            action.config_changes[key] = [have, want]
    grow = current.partitions < spec.partitions
    if grow and not increase:
        action.warnings.append(
            f"has {current.partitions} partitions, wants {spec.partitions}; pass "
            "--increase-partitions to add them (this moves tenants between partitions)"
        )
    elif grow:
        action.warnings.append(
            f"adding partitions {current.partitions} -> {spec.partitions} moves tenants "
            "between partitions: per-tenant order holds only for records written after"
        )
    if current.partitions > spec.partitions:
        action.warnings.append(
            f"has {current.partitions} partitions, more than {spec.partitions}; "
            "partitions are never decreased"
        )
    if current.replication_factor != spec.replication_factor:
        action.warnings.append(
            f"replication factor is {current.replication_factor}, wants "
            f"{spec.replication_factor}; change it with a partition reassignment"
        )
    if action.config_changes or (grow and increase):
        action.action = "alter"
    return action


async def _execute(
    admin: Any, specs: list[TopicSpec], plan: Plan, current: dict[str, _Current]
) -> None:
    by_name = {s.name: s for s in specs}
    to_create = [by_name[a.name] for a in plan.actions if a.action == "create"]
    if to_create:
        response = await admin.create_topics(
            [
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    topic_configs=dict(s.configs),
                )
                for s in to_create
            ]
        )
        for topic in response.to_object()["topic_errors"]:
            if topic["error_code"] != _TOPIC_ALREADY_EXISTS:
                _raise_for(
                    topic["error_code"], topic.get("error_message"), f"create {topic['topic']}"
                )
    alters = [a for a in plan.actions if a.action == "alter" and a.config_changes]
    if alters:
        # AlterConfigs (non-incremental) replaces the topic's whole dynamic config, so send
        # the configs already set on the topic together with ours.
        resources = [
            ConfigResource(
                ConfigResourceType.TOPIC,
                a.name,
                configs={**current[a.name].dynamic, **by_name[a.name].configs},
            )
            for a in alters
        ]
        for response in await admin.alter_configs(resources):
            for resource in response.to_object()["resources"]:
                _raise_for(
                    resource["error_code"],
                    resource["error_message"],
                    f"alter {resource['resource_name']}",
                )
    grow = {
        a.name: NewPartitions(total_count=a.partitions)
        for a in plan.actions
        if a.action == "alter"
        and a.current_partitions is not None
        and a.current_partitions < a.partitions
    }
    if grow:
        try:
            await admin.create_partitions(grow)
        except KafkaError as exc:
            raise ConfigurationError(f"add partitions: {type(exc).__name__}") from exc


async def _await_converged(admin: Any, specs: list[TopicSpec], increase: bool) -> None:
    """Wait until the brokers show the applied state.

    In KRaft mode a created topic or an altered config reaches the brokers' metadata a
    little after the controller answers; returning earlier would let the next reader (or
    the next apply) see the old state.
    """
    pending: list[str] = []
    try:
        async with asyncio.timeout(_CONVERGE_TIMEOUT_S):
            for attempt in range(10_000):
                current = await _describe(admin, [s.name for s in specs], settling=True)
                pending = [
                    s.name
                    for s in specs
                    if _plan_one(s, current.get(s.name), increase).action != "ok"
                ]
                if not pending:
                    return
                await asyncio.sleep(min(0.02 * (attempt + 1), 0.5))
    except TimeoutError:
        pass
    raise ConfigurationError(
        f"topics not in the applied state after {_CONVERGE_TIMEOUT_S:g} s: {', '.join(pending)}"
    )


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        error = for_code(code)
        raise ConfigurationError(f"{what}: {error.__name__}: {message or error.description}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    apply = sub.add_parser("apply", help="create or update every topic (idempotent)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--json", action="store_true", help="print the plan as JSON")
    apply.add_argument(
        "--increase-partitions",
        action="store_true",
        help="add partitions to topics that have fewer than wanted (moves tenants)",
    )
    apply.add_argument("--partitions", type=int, help="override SWITCHYARD_TOPIC_PARTITIONS")
    apply.add_argument(
        "--replication-factor", type=int, help="override SWITCHYARD_REPLICATION_FACTOR"
    )
    for kind, default in (
        ("results", RESULTS_RETENTION_MS),
        ("dlq", DLQ_RETENTION_MS),
        ("logs", LOGS_RETENTION_MS),
    ):
        apply.add_argument(
            f"--{kind}-retention-hours",
            type=_positive_hours,
            default=default / 3_600_000,
            help=f"retention of the {kind} topic (default: %(default)g h)",
        )


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.partitions is not None:
        overrides["topic_partitions"] = args.partitions
    if args.replication_factor is not None:
        overrides["replication_factor"] = args.replication_factor
    settings = load_settings(None, **overrides)
    configure_logging("topics", settings.log_level)
    retention = Retention(
        results_ms=_hours_ms(args.results_retention_hours),
        dlq_ms=_hours_ms(args.dlq_retention_hours),
        logs_ms=_hours_ms(args.logs_retention_hours),
    )
    try:
        plan = asyncio.run(
            apply_topics(
                settings,
                dry_run=args.dry_run,
                increase_partitions=args.increase_partitions,
                retention=retention,
            )
        )
    except (ConnectionError, ValueError) as exc:
        print(f"switchyard topics apply: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(plan.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(plan.render())
    return 0


def _positive_hours(raw: str) -> float:
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise argparse.ArgumentTypeError(f"retention must be a positive number of hours: {raw!r}")
    return hours


def _hours_ms(hours: float) -> int:
    return round(hours * 3_600_000)
