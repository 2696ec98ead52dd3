"""Per-tenant aggregates of the results topic, in bounded memory.

Every ingress replica follows all partitions of the results topic (no consumer group)
from ``lookback`` seconds back, so any replica answers any tenant's observability
request. Memory is bounded three ways: at most ``max_tenants`` tenants (least recently
active evicted first; ``evicted`` counts them), fixed-size statistics per tenant
(``_stats``), and the last ``recent`` commands and failures per tenant. Duplicate
Results (at-least-once delivery upstream) are recognised by command id within the last
``dedup`` ids and counted once.

What is kept of a Result is a summary: ids, action, connector, status, error code and a
redacted error message, latency, and the spans (names, timings, redacted attributes).
The command's arguments and output are never kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from core.follow import TopicFollower
from core.lru import LRU
from core.settings import Settings
from core.tenant_logs import redact
from ingress.results import ResultHead
from schemas import Result, ResultStatus, SpanRecord

from ._stats import LatencyHistogram, Series

__all__ = ["CommandSummary", "ResultsAggregator", "TenantStats"]

_MAX_KEYS = 64  # distinct connectors / codes remembered per tenant
_SECRET_ATTR = ("token", "secret", "password", "authorization", "cookie", "credential", "key")



# The spans of recent commands are kept, as the Result's record bytes (parsed only when
# someone asks for the trace), in one store of at most this many bytes for every tenant:
# the oldest go first. A record larger than _RAW_KEPT (its output may be 1 MiB) is kept
# as its spans alone, re-serialised.
_TRACES_MAX_BYTES = 64 * 1024 * 1024
_RAW_KEPT = 16 * 1024
_SPAN_LIST: TypeAdapter[list[SpanRecord]] = TypeAdapter(list[SpanRecord])


def _trace_bytes(result: Any, raw: bytes | None) -> bytes:
    """What is kept for the trace of ``result``: its record, or its spans alone."""
    if raw is not None and len(raw) <= _RAW_KEPT:
        return raw
    if raw is not None:
        try:
            result = Result.from_bytes(raw)
        except ValidationError:
            return b"[]"  # an invalid record shows no spans rather than unvalidated ones
    return _SPAN_LIST.dump_json(list(result.spans))


def _spans_of(kept: bytes) -> tuple[SpanRecord, ...]:
    try:
        if kept.startswith(b"["):
            return tuple(_SPAN_LIST.validate_json(kept))
        return tuple(Result.from_bytes(kept).spans)
    except ValidationError:
        return ()


@dataclass(frozen=True, slots=True)
class CommandSummary:
    command_id: str
    space_id: str
    action: str
    connector: str | None
    operation: str | None
    status: str
    code: str | None
    message: str | None
    latency_ms: float | None
    finished_at: float
    attempts: int
    trace_id: str | None

    def public(self, *, spans: tuple[SpanRecord, ...] | None = None) -> dict[str, Any]:
        out = {
            "command_id": self.command_id,
            "space_id": self.space_id,
            "action": self.action,
            "connector": self.connector,
            "operation": self.operation,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "latency_ms": self.latency_ms,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "trace_id": self.trace_id,
        }
        if spans is not None:
            out["spans"] = [_span(record) for record in spans]
        return out


def _span(record: SpanRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, value in record.attributes.items():
        if any(word in key.lower() for word in _SECRET_ATTR):
            continue  # never show a credential-carrying attribute, even redacted
        attributes[key] = redact(value, limit=300) if isinstance(value, str) else value
    return {
        "span_id": record.span_id,
        "parent_span_id": record.parent_span_id,
        "name": record.name,
        "kind": record.kind,
        "status": record.status,
        "start_unix_nano": record.start_unix_nano,
        "end_unix_nano": record.end_unix_nano,
        "attributes": attributes,
    }


def _bump(counts: dict[str, int], key: str) -> None:
    if key not in counts and len(counts) >= _MAX_KEYS:
        key = "other"
    counts[key] = counts.get(key, 0) + 1


@dataclass(slots=True)
class TenantStats:
    """Everything kept about one tenant."""

    tenant_id: str
    recent_cap: int
    series: Series = field(default_factory=Series)
    by_status: dict[str, int] = field(default_factory=dict)
    errors_by_code: dict[str, int] = field(default_factory=dict)
    errors_by_connector: dict[str, int] = field(default_factory=dict)
    # connector -> (last time a circuit_open result was seen, how many in a row)
    breakers: dict[str, tuple[float, int]] = field(default_factory=dict)
    recent: deque[CommandSummary] = field(init=False)
    failures: deque[CommandSummary] = field(init=False)
    last_seen: float = 0.0

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.recent_cap)
        self.failures = deque(maxlen=self.recent_cap)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def success_ratio(self) -> float | None:
        total = self.total
        return None if total == 0 else round(self.by_status.get("succeeded", 0) / total, 4)

    def latency(self, seconds: int, now: float) -> dict[str, float | None]:
        hist = LatencyHistogram.merged(slot.latency for slot in self.series.window(seconds, now))
        return {
            f"p{int(q * 100)}_ms": None if (v := hist.quantile(q)) is None else round(v * 1000, 2)
            for q in (0.5, 0.95, 0.99)
        }

    def errors_in(self, seconds: int, now: float) -> int:
        return sum(slot.errors for slot in self.series.window(seconds, now))


class ResultsAggregator:
    """Per-tenant aggregates of final Results; feed it with :meth:`add` or the topic."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_tenants: int = 1_000,
        recent: int = 50,
        lookback: float = 900.0,
        dedup: int = 100_000,
        breaker_window: float = 120.0,
    ) -> None:
        self.max_tenants = max_tenants
        self.recent = recent
        self.breaker_window = breaker_window
        self._tenants: OrderedDict[str, TenantStats] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup = dedup
        # Kept as received and rendered (with redaction) only when someone asks for the
        # trace: rendering every Result's spans on arrival was a third of the ingress's
        # CPU (most traces are never asked for, and bytes cost the garbage collector nothing).
        # (tenant, trace bytes); past a tenth, a tenant makes room from its own, so another's flood does
        # not empty your dashboard's traces.
        self._traces: LRU[str, tuple[str, bytes]] = LRU(
            dedup, max_bytes=_TRACES_MAX_BYTES, weigh=lambda kept: len(kept[1]), owner=lambda kept: kept[0]
        )
        self.evicted = 0
        self.ignored = 0
        self.follower = (
            None
            if settings is None
            else TopicFollower(
                settings, settings.topics.results, self.apply, start_at=lookback, name="observer"
            )
        )

    async def start(self) -> None:
        """Follow the results topic (requires ``settings``).

        Raises:
            core.errors.KafkaUnavailable: the broker or topic is unreachable.
        """
        if self.follower is not None:
            await self.follower.start()

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()

    # -- feeding ------------------------------------------------------------------------

    def apply(self, record: Any) -> None:
        if record.value is None:
            return
        try:
            head = ResultHead.model_validate_json(record.value, extra="ignore")  # as Result.from_bytes
        except ValidationError:
            self.ignored += 1
            return
        self.add_record(head, record.value)

    def add_record(self, head: Any, raw: bytes) -> bool:
        """Count one final Result from its validated head and its record bytes.

        ``head`` has every attribute of a Result but ``output`` and ``spans``
        (:data:`ingress.results.ResultHead`); the spans are parsed from ``raw`` only if
        someone asks for the command's trace.
        """
        return self.add(head, raw=raw)

    def add(self, result: Result, *, now: float | None = None, raw: bytes | None = None) -> bool:
        """Count one final Result; False when it is a duplicate."""
        if result.command_id in self._seen:
            return False
        self._seen[result.command_id] = None
        if len(self._seen) > self._dedup:
            self._seen.popitem(last=False)
        now = time.time() if now is None else now
        stats = self._tenant(result.tenant_id)
        finished = min(now, result.times.finished_at.timestamp())
        latency = max(0.0, (result.times.finished_at - result.times.submitted_at).total_seconds())
        ok = result.status is ResultStatus.SUCCEEDED
        stats.series.add(finished, ok, latency, now)
        stats.by_status[result.status.value] = stats.by_status.get(result.status.value, 0) + 1
        stats.last_seen = max(stats.last_seen, finished)
        code = result.error.code.value if result.error is not None else None
        summary = CommandSummary(
            command_id=result.command_id,
            space_id=result.space_id,
            action=result.action,
            connector=result.connector,
            operation=result.operation,
            status=result.status.value,
            code=code,
            message=redact(result.error.message, limit=500) if result.error is not None else None,
            latency_ms=round(latency * 1000, 2),
            finished_at=finished,
            attempts=result.attempts,
            trace_id=result.trace_id,
        )
        self._traces.put(result.command_id, (result.tenant_id, _trace_bytes(result, raw)))
        stats.recent.append(summary)
        if not ok:
            stats.failures.append(summary)
            _bump(stats.errors_by_code, code or result.status.value)
            _bump(stats.errors_by_connector, result.connector or "none")
        connector = result.connector or "none"
        if code == "circuit_open":
            _, streak = stats.breakers.get(connector, (0.0, 0))
            stats.breakers[connector] = (finished, streak + 1)
        else:
            # Any other outcome means the breaker let a command through: no longer open.
            stats.breakers.pop(connector, None)
        return True

    def _tenant(self, tenant_id: str) -> TenantStats:
        stats = self._tenants.get(tenant_id)
        if stats is None:
            stats = TenantStats(tenant_id, self.recent)
            self._tenants[tenant_id] = stats
            while len(self._tenants) > self.max_tenants:
                self._tenants.popitem(last=False)
                self.evicted += 1
        else:
            self._tenants.move_to_end(tenant_id)
        return stats

    # -- views ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tenants)

    def tenant_ids(self) -> list[str]:
        return list(self._tenants)

    def stats(self, tenant_id: str) -> TenantStats | None:
        return self._tenants.get(tenant_id)

    def metrics(self, tenant_id: str, *, now: float | None = None) -> dict[str, Any]:
        """Rates, success ratio, latency percentiles, counts and the 10-minute timeline."""
        now = time.time() if now is None else now
        stats = self._tenants.get(tenant_id) or TenantStats(tenant_id, 0)
        return {
            "tenant_id": tenant_id,
            "rate_1m": round(stats.series.rate(60, now), 4),
            "rate_5m": round(stats.series.rate(300, now), 4),
            "total": stats.total,
            "by_status": dict(stats.by_status),
            "success_ratio": stats.success_ratio(),
            "latency_5m": stats.latency(300, now),
            "errors_5m": stats.errors_in(300, now),
            "errors_by_code": dict(stats.errors_by_code),
            "errors_by_connector": dict(stats.errors_by_connector),
            "breakers": self._breakers(stats, now),
            "timeline": stats.series.timeline(now),
            "last_seen": stats.last_seen or None,
        }

    def errors(self, tenant_id: str, *, space_id: str | None = None) -> dict[str, Any]:
        """Counts by code and connector (the tenant's), and its last failures (of
        ``space_id`` alone when given)."""
        stats = self._tenants.get(tenant_id)
        failures = (
            []
            if stats is None
            else [f.public() for f in reversed(stats.failures) if space_id in (None, f.space_id)]
        )
        return {
            "tenant_id": tenant_id,
            "errors_by_code": dict(stats.errors_by_code) if stats else {},
            "errors_by_connector": dict(stats.errors_by_connector) if stats else {},
            "failures": failures,
        }

    def commands(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        connector: str | None = None,
        space_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The tenant's most recent commands, newest first, optionally filtered."""
        stats = self._tenants.get(tenant_id)
        if stats is None:
            return []
        out = []
        for item in reversed(stats.recent):
            if space_id is not None and item.space_id != space_id:
                continue
            if status and item.status != status:
                continue
            if connector and item.connector != connector:
                continue
            out.append(item.public())
            if len(out) >= limit:
                break
        return out

    def trace(self, tenant_id: str, command_id: str, *, space_id: str | None = None) -> dict[str, Any] | None:
        """The spans of one of the tenant's recent commands (None if unknown here, or of
        another workspace than ``space_id``)."""
        stats = self._tenants.get(tenant_id)
        if stats is None:
            return None
        for item in (*reversed(stats.recent), *reversed(stats.failures)):
            if item.command_id == command_id and space_id in (None, item.space_id):
                kept = self._traces.peek(command_id)
                return item.public(spans=() if kept is None else _spans_of(kept[1]))
        return None

    def _breakers(self, stats: TenantStats, now: float) -> list[dict[str, Any]]:
        return [
            {"tenant_id": stats.tenant_id, "connector": connector, "state": "open",
             "last_seen": when, "rejections": streak}
            for connector, (when, streak) in stats.breakers.items()
            if now - when <= self.breaker_window
        ]

    def overview(self, *, now: float | None = None, top: int = 10) -> dict[str, Any]:
        """Every tenant in brief, the noisiest, errors by connector and inferred breakers."""
        now = time.time() if now is None else now
        rows = []
        merged = Series()
        by_connector: dict[str, int] = {}
        breakers: list[dict[str, Any]] = []
        for stats in self._tenants.values():
            merged.merge(stats.series)
            for name, count in stats.errors_by_connector.items():
                by_connector[name] = by_connector.get(name, 0) + count
            breakers.extend(self._breakers(stats, now))
            rows.append(
                {
                    "tenant_id": stats.tenant_id,
                    "rate_1m": round(stats.series.rate(60, now), 4),
                    "rate_5m": round(stats.series.rate(300, now), 4),
                    "total": stats.total,
                    "success_ratio": stats.success_ratio(),
                    "errors_5m": stats.errors_in(300, now),
                    "p95_ms": stats.latency(300, now)["p95_ms"],
                    "last_seen": stats.last_seen or None,
                }
            )
        rows.sort(key=lambda r: (-r["rate_1m"], -r["rate_5m"], -r["total"], r["tenant_id"]))
        return {
            "tenants": rows,
            "tenant_count": len(rows),
            "noisiest": rows[:top],
            "errors_by_connector": by_connector,
            "breakers": breakers,
            "timeline": merged.timeline(now),
            "evicted_tenants": self.evicted,
        }
