"""Topic names and Kafka header keys, in one place.

Every topic name is ``<prefix><name>``; the prefix (default ``switchyard.``) lets
several deployments or test runs share a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONNECTORS",
    "DUPLICATE_KIND",
    "Headers",
    "Topics",
    "RETRY_TIERS",
    "ROUTER_TABLES",
    "TASK_CANCEL_KIND",
]

# Connectors the product ships. Workspaces may enable any subset.
CONNECTORS: tuple[str, ...] = ("slack", "gmail", "notion", "jira", "github", "http")

# The router's faust tables, each with a changelog topic (``Topics.router_changelogs``).
ROUTER_TABLES: tuple[str, ...] = ("dedup", "usage")

# Delay (seconds) of each retry tier topic; a failed attempt moves to the next tier.
RETRY_TIERS: tuple[int, ...] = (5, 30, 120)

# ``sy-kind`` of a TaskCancel record on the commands topic (commands are "command").
TASK_CANCEL_KIND = "task-cancel"
# ``sy-kind`` of the router's notice on the commands topic that it dropped a replay of a
# command it routed before (no value; ``sy-routed-at``: when, ms): an ingress replica
# that never saw that command's Result looks for it from then on.
DUPLICATE_KIND = "duplicate"


class Headers:
    """Kafka header keys. Values are UTF-8 bytes."""

    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    TENANT = "sy-tenant"
    SPACE = "sy-space"
    COMMAND_ID = "sy-command-id"
    SCHEMA = "sy-schema"
    KIND = "sy-kind"
    # On a command published as an MCP task: the task's ttl in ms (decimal).
    TASK_TTL = "sy-task-ttl"
    # On a duplicate notice: when the router routed the command first (ms, decimal).
    ROUTED_AT = "sy-routed-at"
    # On a routed command (and its retries): the workspace's ``limits.concurrency``, the
    # commands of its tenant one worker process runs at once (decimal). A header, not a
    # field, so that workers of before read the records of routers of after.
    CONCURRENCY = "sy-concurrency"

    @staticmethod
    def for_command(
        tenant_id: str, space_id: str, command_id: str, *, kind: str, schema: str
    ) -> list[tuple[str, bytes]]:
        """The headers every record about one command carries (trace context is added
        by ``core.telemetry.inject``), so consumers can filter without parsing values."""
        return [
            (Headers.TENANT, tenant_id.encode()),
            (Headers.SPACE, space_id.encode()),
            (Headers.COMMAND_ID, command_id.encode()),
            (Headers.KIND, kind.encode()),
            (Headers.SCHEMA, schema.encode()),
        ]


@dataclass(frozen=True, slots=True)
class Topics:
    """All topic names for one prefix."""

    prefix: str = "switchyard."

    @property
    def commands(self) -> str:
        return f"{self.prefix}commands"

    @property
    def config(self) -> str:
        return f"{self.prefix}config"

    @property
    def results(self) -> str:
        return f"{self.prefix}results"

    @property
    def cancels(self) -> str:
        """Cancellations of commands (TaskCancel records), which every worker process
        follows whole: a cancelled command still queued or waiting to retry ends there
        without running."""
        return f"{self.prefix}cancels"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def logs(self) -> str:
        return f"{self.prefix}logs"

    def connector(self, name: str) -> str:
        return f"{self.prefix}connector.{name}"

    def retry(self, name: str, tier: int) -> str:
        """Retry topic of ``name`` for tier index ``tier`` (0-based into RETRY_TIERS)."""
        return f"{self.prefix}retry.{name}.{RETRY_TIERS[tier]}s"

    def parked(self, name: str) -> str:
        """Where the worker pool of ``name`` parks a flooding tenant's excess commands."""
        return f"{self.prefix}parked.{name}"

    def pool_sources(self, name: str, tiers: int = len(RETRY_TIERS)) -> list[str]:
        """Every topic the worker pool of ``name`` consumes: its connector topic first,
        then its first ``tiers`` retry tiers, then its parked topic."""
        return [self.connector(name), *(self.retry(name, tier) for tier in range(tiers)), self.parked(name)]

    @property
    def router_app(self) -> str:
        """The router's faust app id, also its consumer group: ``<prefix>router``."""
        return f"{self.prefix}router"

    @property
    def router_changelogs(self) -> list[str]:
        """The changelogs of the router's tables (dedup, usage), as faust names them
        (``<app id>-<table>-changelog``). Co-partitioned with the commands topic: each
        needs at least as many partitions (``router._state``)."""
        return [f"{self.router_app}-{table}-changelog" for table in ROUTER_TABLES]

    def all_for(self, connectors: tuple[str, ...] = CONNECTORS) -> list[str]:
        names = [self.commands, self.config, self.results, self.dead_letters, self.logs, self.cancels]
        names.extend(self.router_changelogs)
        for name in connectors:
            names.extend(self.pool_sources(name))
        return names
