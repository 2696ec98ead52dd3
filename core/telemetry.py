"""Tracing helpers: ``span()``, ``inject(headers)``, ``extract(headers)`` and span capture.

W3C trace context travels in Kafka headers through OpenTelemetry's own propagator.
Finished spans are also captured as :class:`schemas.SpanRecord` while a
:func:`capture_spans` block is active, so each hop can attach its spans to the record
it publishes and the final Result carries the whole trace. Spans are exported over
OTLP as well when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the exporter is installed;
that is the only case where the OpenTelemetry SDK runs. Otherwise a light tracer of the
same API (``core._light_trace``) records the spans at a fraction of the SDK's cost.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schemas import SpanRecord

from ._light_trace import MAX_ATTRIBUTES, MAX_KEY, MAX_TEXT, LightSpan, LightTracerProvider

__all__ = [
    "capture_spans",
    "current_trace_id",
    "extract",
    "inject",
    "setup_tracing",
    "span",
    "to_record",
    "tracer",
]

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_captured: contextvars.ContextVar[list[SpanRecord] | None] = contextvars.ContextVar(
    "switchyard_captured_spans", default=None
)
_KINDS: dict[SpanKind, Literal["internal", "server", "client", "producer", "consumer"]] = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}
_STATUS: dict[StatusCode, Literal["unset", "ok", "error"]] = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}
_provider: trace.TracerProvider | None = None
MAX_CAPTURED = 64


def to_record(finished: ReadableSpan | LightSpan) -> SpanRecord:
    """The wire form of a finished span (SDK or light), attributes bounded."""
    if isinstance(finished, LightSpan):
        # Bounded as they were set.
        ctx, status, attributes = finished.get_span_context(), finished.status_code, finished.attributes
    else:
        ctx, status, attributes = finished.context, finished.status.status_code, {}
        for key, value in list((finished.attributes or {}).items())[:MAX_ATTRIBUTES]:
            if isinstance(value, str | int | float | bool):
                attributes[key[:MAX_KEY]] = value[:MAX_TEXT] if isinstance(value, str) else value
    parent = finished.parent
    # Built from values this process made and bounded above: no validation needed,
    # and this runs for every span of every command.
    return SpanRecord.model_construct(
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=finished.name[:128],
        kind=_KINDS.get(finished.kind, "internal"),
        start_unix_nano=finished.start_time or 0,
        end_unix_nano=finished.end_time or 0,
        status=_STATUS.get(status, "unset"),
        attributes=attributes,
    )


def _capture(finished: ReadableSpan | LightSpan) -> None:
    """Append a finished span to the list of the active :func:`capture_spans` block."""
    sink = _captured.get()
    if sink is not None and len(sink) < MAX_CAPTURED:
        sink.append(to_record(finished))


class _CaptureProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        _capture(span)


def setup_tracing(service_name: str, otlp_endpoint: str | None = None) -> trace.TracerProvider:
    """Install the process's tracer provider (once; later calls return the same one).

    With ``otlp_endpoint`` (and the OTLP exporter installed) the OpenTelemetry SDK
    records and exports spans; without, the light tracer records them only as
    SpanRecords, which is all the product's own traces need.
    """
    global _provider
    if _provider is not None:
        return _provider
    provider: trace.TracerProvider = LightTracerProvider(_capture)
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            logger.warning("OTLP endpoint set but opentelemetry-exporter-otlp is not installed")
        else:
            sdk = TracerProvider(resource=Resource.create({"service.name": service_name}))
            sdk.add_span_processor(_CaptureProcessor())
            sdk.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            provider = sdk
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


_tracers: dict[str, trace.Tracer] = {}


def tracer(name: str = "switchyard") -> trace.Tracer:
    # get_tracer builds a new Tracer (and an InstrumentationScope) per call: cache them,
    # this runs once per command per hop.
    found = _tracers.get(name)
    if found is None:
        if _provider is None:
            setup_tracing("switchyard")
        assert _provider is not None
        found = _tracers[name] = _provider.get_tracer(name)
    return found


@contextmanager
def capture_spans() -> Iterator[list[SpanRecord]]:
    """Collect the spans that end inside this block (same task/context)."""
    sink: list[SpanRecord] = []
    token = _captured.set(sink)
    try:
        yield sink
    finally:
        _captured.reset(token)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    context: otel_context.Context | None = None,
) -> Iterator[Span]:
    """Start a span as the current one; errors mark it failed and propagate."""
    with tracer().start_as_current_span(
        name, kind=kind, attributes=dict(attributes or {}), context=context
    ) as current:
        yield current


def inject(headers: list[tuple[str, bytes]], context: otel_context.Context | None = None) -> None:
    """Append W3C ``traceparent``/``tracestate`` of the current span to Kafka headers."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    headers.extend((key, value.encode()) for key, value in carrier.items())


def extract(headers: Iterable[tuple[str, bytes]] | Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by Kafka headers (an empty context when there is none)."""
    if headers is None:
        carrier: dict[str, str] = {}
    elif isinstance(headers, Mapping):
        carrier = dict(headers)
    else:
        carrier = {k: v.decode("utf-8", "replace") for k, v in headers if v is not None}
    return _PROPAGATOR.extract(carrier)


def current_trace_id(context: otel_context.Context | None = None) -> str | None:
    """The trace id of the current span, or of the span ``context`` carries."""
    ctx = trace.get_current_span(context).get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None
