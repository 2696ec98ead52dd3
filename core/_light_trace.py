"""A small OpenTelemetry API tracer for processes that export no spans.

Switchyard keeps every hop's finished spans as :class:`schemas.SpanRecord` on the records
it publishes; it needs OpenTelemetry's *API* (current-span context, W3C propagation) but
not the SDK's machinery (span processors, locks, bounded attribute maps, resources),
which cost a quarter of a worker's CPU per command. This tracer implements the API with
plain objects and hands each finished span to ``on_end``. When an OTLP endpoint is
configured, ``core.telemetry`` uses the SDK instead, so exported spans are the SDK's own.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

__all__ = ["LightSpan", "LightTracer", "LightTracerProvider"]

MAX_ATTRIBUTES = 32
MAX_KEY = 128
MAX_TEXT = 1000
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_PRIMITIVES = (str, bool, int, float)


class LightSpan(Span):
    """A recording span with only what a :class:`schemas.SpanRecord` needs."""

    __slots__ = (
        "_context",
        "_on_end",
        "attributes",
        "end_time",
        "kind",
        "name",
        "parent",
        "start_time",
        "status_code",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
        start_time: int,
        on_end: Callable[[LightSpan], None],
    ) -> None:
        self.name = name
        self._context = context
        self.parent = parent
        self.kind = kind
        self.attributes: dict[str, Any] = {}
        self.end_time: int | None = None
        if attributes:
            self.set_attributes(attributes)
        self.start_time = start_time
        self.status_code = StatusCode.UNSET
        self._on_end = on_end

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        # Bounded as a SpanRecord's attributes are (count, key and text length); other
        # value types are not kept in records.
        if self.end_time is None and isinstance(value, _PRIMITIVES):
            key = key[:MAX_KEY]
            if key in self.attributes or len(self.attributes) < MAX_ATTRIBUTES:
                self.attributes[key] = value[:MAX_TEXT] if isinstance(value, str) else value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        """Events are not part of a SpanRecord: dropped."""

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        """Links are not part of a SpanRecord: dropped."""

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        # As the SDK: OK is final, and UNSET never overrides a status already set.
        if self.status_code is not StatusCode.OK and code is not StatusCode.UNSET:
            self.status_code = code

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # Only the type: an exception's message may carry data that must not travel.
        self.set_attribute("exception.type", type(exception).__name__)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        self._on_end(self)


class LightTracer(trace.Tracer):
    def __init__(self, on_end: Callable[[LightSpan], None]) -> None:
        self._on_end = on_end

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> LightSpan:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, parent_context = parent.trace_id, parent
        else:
            trace_id, parent_context = random.getrandbits(128) or 1, None
        span_context = SpanContext(
            trace_id, random.getrandbits(64) or 1, is_remote=False, trace_flags=_SAMPLED
        )
        return LightSpan(
            name,
            span_context,
            parent_context,
            kind,
            attributes,
            start_time if start_time is not None else time.time_ns(),
            self._on_end,
        )

    # A context manager of a Span as the API's, but a plain class: it runs per span.
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _AsCurrent:
        current = self.start_span(name, context, kind, attributes, links, start_time)
        return _AsCurrent(current, context, record_exception, set_status_on_exception, end_on_exit)


class _AsCurrent:
    """``with``-block making a span current; a class, not a generator: it runs per span."""

    __slots__ = ("_context", "_end", "_record", "_set_status", "_span", "_token")

    def __init__(
        self,
        span: LightSpan,
        context: otel_context.Context | None,
        record_exception: bool,
        set_status_on_exception: bool,
        end_on_exit: bool,
    ) -> None:
        self._span = span
        self._context = context
        self._record = record_exception
        self._set_status = set_status_on_exception
        self._end = end_on_exit
        self._token: object = None

    def __enter__(self) -> LightSpan:
        self._token = otel_context.attach(trace.set_span_in_context(self._span, self._context))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception):
            if self._record:
                self._span.record_exception(exc)
            if self._set_status:
                self._span.set_status(StatusCode.ERROR)
        otel_context.detach(self._token)  # type: ignore[arg-type]
        if self._end:
            self._span.end()


class LightTracerProvider(trace.TracerProvider):
    """One tracer for every instrumentation scope (scopes are not part of a SpanRecord)."""

    def __init__(self, on_end: Callable[[LightSpan], None]) -> None:
        self._tracer = LightTracer(on_end)

    def get_tracer(self, *args: Any, **kwargs: Any) -> LightTracer:
        return self._tracer
