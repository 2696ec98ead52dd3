"""Per-tenant execution log lines on the logs topic, keyed by tenant, plus secret redaction.

A tenant's log stream can be followed by reading the logs topic filtered by key, without
reading anyone else's lines (and with one partition per tenant, in order). Publishing
never blocks the event loop: lines go to a bounded queue and a background task sends
them in batches; when the queue is full the line is dropped and counted
(``dropped`` and ``switchyard_tenant_log_dropped``), because losing a log line is
better than stalling command execution.

A line holds only these fields: ``ts, level, tenant_id, space_id, command_id, trace_id,
msg`` and, when given, ``connector, action, status, code, attempt``. Nothing else of a
log record is copied (so an ``extra`` dict holding a credential cannot leak), and the
message goes through :func:`redact` first. Redaction is by pattern: values after
secret-like keys (``token=``, ``"password": ...``, ``Authorization: Bearer ...``),
known credential prefixes (Slack ``xox?-``, GitHub ``ghp_``/``github_pat_``, Google
``ya29.``, Switchyard ``sy_`` keys, Vault ``hvs.``), JWTs, and long opaque tokens.

Two ways in: :meth:`TenantLogPublisher.publish` (explicit), or
:class:`TenantLogHandler` on a logger, which forwards records emitted inside a
``core.logs.bind(tenant_id=...)`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from .kafka import make_producer, start_client
from .logs import current_context
from .metrics import Metrics
from .settings import Settings
from .tasks import cancel_and_wait

__all__ = ["REDACTED", "TenantLogHandler", "TenantLogPublisher", "redact"]

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
_MAX_MSG = 2_000
_OPTIONAL = ("connector", "action", "status", "code", "attempt")

_SECRET_KEYS = (
    r"(?:access[_-]?token|refresh[_-]?token|id[_-]?token|token|secret|client[_-]?secret|password"
    r"|passwd|pwd|api[_-]?key|authorization|auth|credentials?|private[_-]?key|session|cookie"
    r"|signature|sig)"
)
_PATTERNS = [
    # key=value, key: value, "key": "value" (the value up to a delimiter; a quoted one
    # to its closing quote, escaped quotes inside included).
    re.compile(
        rf"""(?i)(["']?\b[\w-]*{_SECRET_KEYS}["']?\s*[:=]\s*)(?:bearer\s+|basic\s+)?("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}}\]]+)"""
    ),
    # The password of a URL's user information (scheme://user:password@host).
    re.compile(r"(?i)(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\b(?:xox[abposr]|xapp)-[A-Za-z0-9-]{6,}"),
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{10,}|\bgithub_pat_[A-Za-z0-9_]{10,}"),
    re.compile(r"\bya29\.[A-Za-z0-9._-]{6,}|\bhvs\.[A-Za-z0-9._-]{6,}|\bsy_[A-Za-z0-9_]{8,}"),
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}|\bglpat-[A-Za-z0-9_-]{10,}|\bsecret_[A-Za-z0-9]{16,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # Long opaque tokens: 32+ URL-safe characters mixing letters and digits. A bare
    # 32-hex trace id is kept (it is what people search logs by).
    re.compile(r"\b(?![0-9a-f]{32}\b)(?=[A-Za-z0-9_\-+/]*\d)(?=[A-Za-z0-9_\-+/]*[A-Za-z])[A-Za-z0-9_\-+/]{32,}={0,2}"),
]


def redact(text: str, *, limit: int = _MAX_MSG) -> str:
    """``text`` with secret-looking values replaced by ``[redacted]``, cut to ``limit`` chars."""
    if len(text) <= _CACHED_LEN:
        return _redact_short(text, limit)
    return _redact(text, limit)


# Log lines repeat the same short messages and field values (status, connector, action)
# for every command; the six regexes cost ~60 µs per call. A bounded cache of results
# for short strings keeps that off the per-command path without holding long ones.
_CACHED_LEN = 200


@functools.lru_cache(maxsize=4096)
def _redact_short(text: str, limit: int) -> str:
    return _redact(text, limit)


def _redact(text: str, limit: int) -> str:
    text = text[: limit * 2]  # bound the regex work on hostile input
    first, *rest = _PATTERNS
    text = first.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    for pattern in rest:
        text = pattern.sub(REDACTED, text)
    return text[:limit]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class TenantLogPublisher:
    """Batches tenant log lines to ``settings.topics.logs``, keyed by tenant id.

    The queue is bounded, and so is each tenant's share of it (a tenth): a tenant whose
    commands flood loses its own lines past that share, not the other tenants'.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer | None = None,
        max_queue: int = 10_000,
        max_batch: int = 500,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.logs
        self._own_producer = producer is None
        self._producer = producer
        self._queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue(max_queue)
        self._tenant_share = max(1, max_queue // 10)
        self._queued: dict[bytes, int] = {}  # lines queued per tenant (key)
        self._max_batch = max_batch
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sent = 0

    async def start(self) -> None:
        """Start the sender (and the producer, when this publisher owns it).

        Raises:
            KafkaUnavailable: the broker cannot be reached.
        """
        if self._producer is None:
            self._producer = make_producer(self.settings, linger_ms=50)
        if self._own_producer:
            await start_client(self._producer, what="tenant log producer")
        self._task = asyncio.create_task(self._run(), name="tenant-logs")

    async def stop(self, *, flush_timeout: float = 5.0) -> None:
        """Send what is queued (bounded by ``flush_timeout``), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    await self._queue.join()
            await cancel_and_wait(self._task)
            self._task = None
        if self._own_producer and self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()

    def publish(
        self,
        level: str,
        msg: str,
        *,
        tenant_id: str,
        space_id: str | None = None,
        command_id: str | None = None,
        trace_id: str | None = None,
        ts: float | None = None,
        **optional: str | int | None,
    ) -> bool:
        """Queue one line; returns False (and counts a drop) when the queue is full."""
        line: dict[str, Any] = {
            "ts": _iso(time.time() if ts is None else ts),
            "level": level.lower(),
            "tenant_id": tenant_id,
            "space_id": space_id,
            "command_id": command_id,
            "trace_id": trace_id,
            "msg": redact(msg),
        }
        for name in _OPTIONAL:
            value = optional.get(name)
            if value is not None:
                line[name] = redact(str(value), limit=200) if isinstance(value, str) else value
        key = tenant_id.encode()
        queued = self._queued.get(key, 0)
        if queued >= self._tenant_share:
            self._drop(1)
            return False
        try:
            self._queue.put_nowait((key, orjson.dumps(line)))
        except asyncio.QueueFull:
            self._drop(1)
            return False
        self._queued[key] = queued + 1
        return True

    def _drop(self, lines: int) -> None:
        self.dropped += lines
        if self._metrics is not None:
            self._metrics.tenant_log_dropped.inc(lines)

    async def _run(self) -> None:
        assert self._producer is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                futures = [
                    await self._producer.send(self.topic, value=value, key=key) for key, value in batch
                ]
                await asyncio.gather(*futures)
                self.sent += len(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Log lines are best effort: count them as dropped and keep going.
                self._drop(len(batch))
                logger.exception("could not send %d tenant log lines", len(batch))
            finally:
                for key, _ in batch:
                    left = self._queued.get(key, 1) - 1
                    if left > 0:
                        self._queued[key] = left
                    else:
                        self._queued.pop(key, None)
                    self._queue.task_done()


class TenantLogHandler(logging.Handler):
    """Forwards log records emitted inside ``bind(tenant_id=...)`` to a publisher.

    Records outside a tenant context, and records from other loggers than
    ``namespaces`` (default: our components), are ignored, so library chatter never
    reaches a tenant's stream. Must be used on the publisher's event loop thread.
    """

    def __init__(
        self,
        publisher: TenantLogPublisher,
        *,
        namespaces: tuple[str, ...] = ("workers", "router", "ingress"),
        level: int = logging.INFO,
    ) -> None:
        super().__init__(level)
        self.publisher = publisher
        self.namespaces = namespaces

    def emit(self, record: logging.LogRecord) -> None:
        context = current_context()
        tenant_id = context.get("tenant_id")
        if not tenant_id or not record.name.startswith(self.namespaces):
            return
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        fields = getattr(record, "fields", None)
        optional = {
            name: fields[name]
            for name in _OPTIONAL
            if isinstance(fields, dict) and isinstance(fields.get(name), str | int)
        }
        optional.update({name: context[name] for name in _OPTIONAL if name in context})
        self.publisher.publish(
            record.levelname,
            message,
            tenant_id=tenant_id,
            space_id=context.get("space_id"),
            command_id=context.get("command_id"),
            trace_id=context.get("trace_id"),
            ts=record.created,
            **optional,
        )
