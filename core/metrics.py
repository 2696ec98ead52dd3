"""Prometheus metrics of one process, with bounded label cardinality.

Each process builds one :class:`Metrics` (its own ``CollectorRegistry``, not the global
one, so tests can build several) and exposes it on ``/metrics`` (:mod:`core.health`).

Cardinality is bounded by construction: every tenant label goes through a
:class:`TenantLabeler`, which admits the first ``tenant_cap`` distinct tenants of the
process (default 200) and maps every later one to ``"(other)"``; workspaces are admitted
per process up to ``space_cap`` and connectors up to ``connector_cap`` the same way. A
flood of new tenant ids therefore adds no series once the caps are reached. Per-tenant
detail beyond the cap is served by the results-topic observer (``ingress.observe``),
whose per-tenant views are bounded by their own LRU.

Latency histograms carry no tenant label on the per-stage series (stage × connector),
and tenant × connector on the end-to-end series only, to keep the series count small.

The router counts every command it sends, so it uses :meth:`Metrics.count_routed` and
:meth:`Metrics.count_rejected`: they cache the label children per raw (tenant, space,
connector or code), up to ``hot_cap`` entries, so a routed command costs a dict lookup,
an increment and one histogram observation instead of label validation and formatting.
A worker's per-attempt calls (:meth:`Metrics.command_started`, :meth:`command_stopped`,
:meth:`result`) cache theirs the same way. Past the cap (only a flood of distinct ids
gets there) they take the uncached path, so the caches are bounded too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import IntEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from schemas import Command, Result, ResultStatus, RoutedCommand

from ._metrics_lag import consumer_lag, group_lag, lag_by_topic

__all__ = [
    "CONTENT_TYPE_LATEST",
    "OTHER",
    "BreakerState",
    "Metrics",
    "TenantLabeler",
    "consumer_lag",
    "lag_by_topic",
    "group_lag",
    "sum_by_topic",
]

# Not a valid tenant, workspace or connector id (those are [A-Za-z0-9_]): a tenant
# called "other" keeps series of its own.
OTHER = "(other)"

# Seconds: from a fast local call to a command that waited through the retry tiers.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0)


class BreakerState(IntEnum):
    """Gauge values of ``switchyard_circuit_breaker_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class TenantLabeler:
    """Admits at most ``cap`` distinct label values per process; the rest become ``"(other)"``.

    First come, first admitted, for the life of the process: evicting an admitted value
    would make its counters restart and Prometheus read that as a reset, so the set only
    grows until the cap. Thread-safe (workers may label from executor threads).
    """

    def __init__(self, cap: int = 200) -> None:
        if cap < 0:
            raise ValueError("cap must be >= 0")
        self.cap = cap
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return OTHER
        if value in self._admitted:
            return value
        with self._lock:
            if value in self._admitted:
                return value
            if len(self._admitted) >= self.cap:
                return OTHER
            self._admitted.add(value)
            return value

    def __len__(self) -> int:
        return len(self._admitted)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


class Metrics:
    """Every Switchyard metric of one process, in its own registry."""

    def __init__(
        self,
        service: str,
        *,
        tenant_cap: int = 200,
        space_cap: int = 1_000,
        connector_cap: int = 64,
        hot_cap: int = 4_096,
    ) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenants = TenantLabeler(tenant_cap)
        self._spaces = TenantLabeler(space_cap)
        self.connectors = TenantLabeler(connector_cap)
        # (tenant_id, space_id, connector or code) -> label children; see count_routed.
        self._hot: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._hot_rejected: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # Raw ids of a worker's per-attempt calls -> label children (same cap).
        self._hot_worker: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._hot_cap = hot_cap
        r = self.registry
        ts, tsc = ["tenant", "space"], ["tenant", "space", "connector"]
        self.accepted = Counter("switchyard_commands_accepted", "Commands accepted by the ingress.", ts, registry=r)
        self.routed = Counter("switchyard_commands_routed", "Commands routed to a connector.", tsc, registry=r)
        self.succeeded = Counter("switchyard_commands_succeeded", "Commands that succeeded.", tsc, registry=r)
        self.failed = Counter(
            "switchyard_commands_failed", "Commands that failed or expired (final; dead letters apart).", [*tsc, "code"], registry=r
        )
        self.rejected = Counter(
            "switchyard_commands_rejected", "Commands rejected before running.", [*ts, "code"], registry=r
        )
        self.retried = Counter("switchyard_commands_retried", "Attempts scheduled for retry.", tsc, registry=r)
        self.dead_lettered = Counter(
            "switchyard_commands_dead_lettered", "Commands sent to the dead-letter topic.", tsc, registry=r
        )
        self.effects_found = Counter(
            "switchyard_effects_found",
            "Calls not made again: the upstream showed an earlier attempt's effect.",
            tsc,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "switchyard_command_latency_seconds",
            "Submitted to finished, per final command.",
            ["tenant", "connector"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "switchyard_stage_latency_seconds",
            "Time spent between two stages (ingress_to_routed, routed_to_started of a first "
            "attempt, started_to_finished).",
            ["stage", "connector"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # No tenant label: one series per (connector, outcome), so a rate over it is whole
        # from the first scrape, and the outcomes are the fixed set of error codes.
        self.upstream_calls = Counter(
            "switchyard_upstream_calls",
            "Calls of a connector's operations by outcome: ok, or the call's error code.",
            ["connector", "outcome"],
            registry=r,
        )
        # Operations are the connector's fixed set (the worker refuses any other).
        self.upstream_seconds = Histogram(
            "switchyard_upstream_call_seconds",
            "Duration of calls of a connector's operations, whatever their outcome.",
            ["connector", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("switchyard_in_flight", "Commands running now, per tenant.", ["tenant"], registry=r)
        self.breaker = Gauge(
            "switchyard_circuit_breaker_state",
            "Circuit breaker per (tenant, connector): 0 closed, 1 half-open, 2 open.",
            ["tenant", "connector"],
            registry=r,
        )
        self.worker_slots = Gauge(
            "switchyard_worker_slots",
            "Commands a worker process runs at once at most (its concurrency): with "
            "switchyard_in_flight summed, how full the pool is.",
            ["connector"],
            registry=r,
        )
        self.credential_waits = Gauge(
            "switchyard_waiting_for_credentials",
            "Commands waiting for the credential store (Vault) to answer; they spend no attempt meanwhile.",
            ["connector"],
            registry=r,
        )
        self.lag = Gauge(
            "switchyard_consumer_lag", "Records not yet consumed, per consumer group and topic.",
            ["group", "topic"], registry=r,
        )
        self.assigned = Gauge(
            "switchyard_assigned_partitions",
            "Partitions this process holds, per consumer group and topic (0: an idle replica).",
            ["group", "topic"], registry=r,
        )
        # The ingress's edge: every answer by route (the app's fixed route patterns, so
        # the label is bounded) and status, and its duration.
        self.http_requests = Counter(
            "switchyard_http_requests",
            "Requests answered by the ingress, per route pattern, method and HTTP status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "switchyard_http_request_seconds",
            "Time the ingress took to answer, per route pattern and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "switchyard_edge_rate_limited",
            "Submissions refused (429) by the ingress's per-tenant edge rate limit.",
            ["tenant"],
            registry=r,
        )
        self.tenant_log_dropped = Counter(
            "switchyard_tenant_log_dropped", "Tenant log lines dropped because the queue was full.",
            registry=r,
        )

    # -- labels -----------------------------------------------------------------------

    def labels(self, tenant_id: str | None, space_id: str | None = None) -> tuple[str, str]:
        """Bounded (tenant, space) label values."""
        tenant = self.tenants(tenant_id)
        if tenant == OTHER or not space_id:
            return tenant, OTHER
        return tenant, self._spaces(f"{tenant}/{space_id}").partition("/")[2] or OTHER

    def connector(self, name: str | None) -> str:
        return self.connectors(name) if name else "none"

    # -- events -----------------------------------------------------------------------

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request the ingress answered (``route`` is its pattern, not its path)."""
        key = ("http", route, method, status)
        children = self._hot_worker.get(key)
        if children is None:
            children = (
                self.http_requests.labels(route, method, str(status)),
                self.http_seconds.labels(route, method),
            )
            self._remember(key, children)
        children[0].inc()
        children[1].observe(seconds)

    def edge_rate_limited(self, tenant_id: str) -> None:
        self.rate_limited.labels(self.tenants(tenant_id)).inc()

    def command_accepted(self, command: Command) -> None:
        self.accepted.labels(*self.labels(command.tenant_id, command.space_id)).inc()

    def command_routed(self, routed: RoutedCommand) -> None:
        seconds = _seconds(routed.submitted_at, routed.routed_at) or 0.0
        self.count_routed(routed.tenant_id, routed.space_id, routed.connector, seconds)

    def count_routed(self, tenant_id: str, space_id: str, connector: str, waited: float) -> None:
        """What :meth:`command_routed` counts, from plain values, for the router's hot path.

        Args:
            tenant_id: the command's tenant (raw; bounded here).
            space_id: its workspace.
            connector: the connector it was routed to.
            waited: seconds from submission to routing (stage ``ingress_to_routed``).
        """
        key = (tenant_id, space_id, connector)
        children = self._hot.get(key)
        if children is None:
            tenant, space = self.labels(tenant_id, space_id)
            label = self.connector(connector)
            children = (
                self.routed.labels(tenant, space, label),
                self.stage_latency.labels("ingress_to_routed", label),
            )
            if len(self._hot) < self._hot_cap:
                self._hot[key] = children
        children[0].inc()
        children[1].observe(max(0.0, waited))

    def count_rejected(self, tenant_id: str, space_id: str, code: str, waited: float) -> None:
        """What :meth:`result` counts for a REJECTED Result, from plain values (router hot path).

        Args:
            tenant_id: the command's tenant (raw; bounded here).
            space_id: its workspace.
            code: the rejection's error code value.
            waited: seconds from submission to the rejection (end-to-end latency).
        """
        key = (tenant_id, space_id, code)
        children = self._hot_rejected.get(key)
        if children is None:
            tenant, space = self.labels(tenant_id, space_id)
            children = (
                self.rejected.labels(tenant, space, code),
                self.e2e_latency.labels(tenant, self.connector(None)),
            )
            if len(self._hot_rejected) < self._hot_cap:
                self._hot_rejected[key] = children
        children[0].inc()
        children[1].observe(max(0.0, waited))

    def command_retried(self, routed: RoutedCommand) -> None:
        tenant, space = self.labels(routed.tenant_id, routed.space_id)
        self.retried.labels(tenant, space, self.connector(routed.connector)).inc()

    def effect_found(self, routed: RoutedCommand) -> None:
        tenant, space = self.labels(routed.tenant_id, routed.space_id)
        self.effects_found.labels(tenant, space, self.connector(routed.connector)).inc()

    def upstream_call(self, connector: str, operation: str, outcome: str, seconds: float) -> None:
        """One call of ``connector``'s ``operation`` ended with ``outcome`` ("ok" or an
        error code) after ``seconds``."""
        key = ("call", connector, operation, outcome)
        children = self._hot_worker.get(key)
        if children is None:
            label = self.connector(connector)
            children = (self.upstream_calls.labels(label, outcome), self.upstream_seconds.labels(label, operation))
            self._remember(key, children)
        children[0].inc()
        children[1].observe(seconds)

    def command_started(self, routed: RoutedCommand, started_at: datetime) -> None:
        """A worker started an attempt: counts it in flight and times routed → started
        (the first attempt's wait for a worker)."""
        key = ("started", routed.tenant_id, routed.connector)
        children = self._hot_worker.get(key)
        if children is None:
            children = (
                self.in_flight.labels(self.tenants(routed.tenant_id)),
                self.stage_latency.labels("routed_to_started", self.connector(routed.connector)),
            )
            self._remember(key, children)
        children[0].inc()
        # The first attempt only: a retry's wait is its backoff, not a queue.
        seconds = _seconds(routed.routed_at, started_at) if routed.attempt == 1 else None
        if seconds is not None:
            children[1].observe(seconds)

    def command_stopped(self, tenant_id: str) -> None:
        """The attempt counted by :meth:`command_started` ended (any outcome)."""
        key = ("stopped", tenant_id)
        children = self._hot_worker.get(key)
        if children is None:
            children = (self.in_flight.labels(self.tenants(tenant_id)),)
            self._remember(key, children)
        children[0].dec()

    def result(self, result: Result) -> None:
        """Count one final Result and observe its latencies (call once per Result written)."""
        code = result.error.code.value if result.error is not None else "none"
        status = result.status
        key = ("result", result.tenant_id, result.space_id, result.connector, status, code)
        children = self._hot_worker.get(key)
        if children is None:
            children = self._result_children(result, status, code)
            self._remember(key, children)
        counters, e2e, stage = children
        for counter in counters:
            counter.inc()
        times = result.times
        total = _seconds(times.submitted_at, times.finished_at)
        if total is not None:
            e2e.observe(total)
        ran = _seconds(times.started_at, times.finished_at)
        if ran is not None and stage is not None:
            stage.observe(ran)

    def _result_children(
        self, result: Result, status: ResultStatus, code: str
    ) -> tuple[tuple[Any, ...], Any, Any]:
        tenant, space = self.labels(result.tenant_id, result.space_id)
        connector = self.connector(result.connector)
        counters: tuple[Any, ...]
        if status is ResultStatus.SUCCEEDED:
            counters = (self.succeeded.labels(tenant, space, connector),)
        elif status is ResultStatus.REJECTED:
            counters = (self.rejected.labels(tenant, space, code),)
        elif status is ResultStatus.DEAD_LETTERED:
            # Its own final status, counted once: a dashboard summing outcomes would count
            # it twice were it a failure (retries_exhausted) as well.
            counters = (self.dead_lettered.labels(tenant, space, connector),)
        else:
            counters = (self.failed.labels(tenant, space, connector, code),)
        stage = None
        if status is not ResultStatus.REJECTED:
            stage = self.stage_latency.labels("started_to_finished", connector)
        return counters, self.e2e_latency.labels(tenant, connector), stage

    def _remember(self, key: tuple[Any, ...], children: tuple[Any, ...]) -> None:
        # Bounded like the router's caches: past the cap, the uncached path is taken.
        if len(self._hot_worker) < self._hot_cap:
            self._hot_worker[key] = children

    def watch_breaker(self, tenant_id: str, connector: str, read: Callable[[], BreakerState]) -> None:
        """Report ``read()`` as the breaker state of (tenant, connector) at each scrape.

        Read when scraped, not set on change: an open breaker whose tenant's partitions
        moved to another replica, or that nobody tried since its cool-down, is not left
        reading "open" forever. Tenants past the label cap are left out: they would share
        one "(other)" series, where the last one written would hide the others.
        """
        tenant = self.tenants(tenant_id)
        if tenant == OTHER:
            return
        self.breaker.labels(tenant, self.connector(connector)).set_function(lambda: float(read()))

    def set_worker_slots(self, connector: str, slots: int) -> None:
        self.worker_slots.labels(self.connector(connector)).set(slots)

    def watch_credential_waits(self, connector: str, read: Callable[[], int]) -> None:
        """Report ``read()`` as the commands of ``connector`` waiting for the credential store."""
        self.credential_waits.labels(self.connector(connector)).set_function(lambda: float(read()))

    def set_lag(self, group: str, lag_by_topic: dict[str, int], topics: Iterable[str] = ()) -> None:
        """Lag this process sees per topic; ``topics`` it holds no partition of now read 0,
        not the lag they had when it last held one (a stale value would sum into a pool's)."""
        for topic in topics:
            if topic not in lag_by_topic:
                self.lag.labels(group, topic).set(0)
        for topic, value in lag_by_topic.items():
            self.lag.labels(group, topic).set(value)

    def set_assigned(self, group: str, topics: Iterable[str], assigned: Iterable[tuple[str, int]]) -> None:
        """How many partitions of each of ``topics`` this process holds now."""
        held: dict[str, int] = {}
        for topic, _ in assigned:
            held[topic] = held.get(topic, 0) + 1
        for topic in topics:
            self.assigned.labels(group, topic).set(held.get(topic, 0))

    # -- exposition -------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def series_count(self) -> int:
        """Samples in the exposition: the number the label caps bound."""
        return sum(len(family.samples) for family in self.registry.collect())


def sum_by_topic(lag: dict[tuple[str, int], int], topics: Iterable[str] | None = None) -> dict[str, int]:
    """Per-partition lag summed per topic (optionally only ``topics``)."""
    wanted = set(topics) if topics is not None else None
    out: dict[str, int] = {}
    for (topic, _), value in lag.items():
        if wanted is None or topic in wanted:
            out[topic] = out.get(topic, 0) + value
    return out
