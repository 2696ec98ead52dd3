"""Outgoing records of a finished attempt: the final Result, a retry-tier hand-off, a dead letter.

All are keyed by tenant id (same partitioning as the commands) and carry the command's
identity and W3C trace context in headers, so a consumer can filter and join without
parsing the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from pydantic import ConfigDict, TypeAdapter

from core.telemetry import inject
from schemas import (
    RESULT_SCHEMA_VERSION,
    Command,
    ErrorCode,
    ErrorInfo,
    Headers,
    Result,
    ResultStatus,
    RoutedCommand,
    SpanRecord,
    StageTimes,
    fields_from_command,
)
from schemas._base import WireModel
from schemas._limits import check_json_bounds
from schemas.trace import MAX_SPANS

__all__ = ["Outgoing", "build_result", "dead_letter_raw", "record_for", "unreadable_result"]

KIND_RESULT = "result"
KIND_RETRY = "retry"
KIND_DEAD_LETTER = "dead_letter"

# The one Result field whose value is not ours: the connector's output, from upstream.
# Checked as Result checks it (``str_max_length`` on keys, then depth and size bounds),
# but to 768 KiB where Result allows 1 MiB: the record must stay under the broker's and
# the producer's 1 MiB with the spans and the rest around it. A record over that would
# fail its whole transaction, every time: one command stopping the pool's partition.
MAX_OUTPUT_BYTES = 768 * 1024
_OUTPUT: TypeAdapter[dict[str, Any]] = TypeAdapter(
    dict[str, Any], config=ConfigDict(str_max_length=WireModel.model_config.get("str_max_length"))
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce in the pool's next transaction."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def build_result(
    command: RoutedCommand,
    status: ResultStatus,
    *,
    output: dict[str, Any] | None = None,
    error: ErrorInfo | None = None,
    attempts: int,
    started_at: datetime | None,
    finished_at: datetime,
    trace_id: str | None,
    spans: list[SpanRecord],
) -> Result:
    """The one final Result of ``command``: earlier hops' spans first, then this worker's.

    Built without re-validating what is already valid (``model_construct``): every field
    comes from the validated command or from this worker, except ``output``, which is
    validated here exactly as :class:`Result` validates it.

    Raises:
        ValueError: ``output`` breaks the Result bounds (a ``pydantic.ValidationError``
            for its type, a plain ``ValueError`` for its depth or size).
    """
    if output is not None:
        output = check_json_bounds(_OUTPUT.validate_python(output), max_bytes=MAX_OUTPUT_BYTES)
    own = list(spans)[-MAX_SPANS:]
    merged = list(command.spans)[: MAX_SPANS - len(own)] + own
    times = StageTimes.model_construct(
        submitted_at=command.submitted_at,
        routed_at=command.routed_at,
        started_at=started_at,
        finished_at=finished_at,
    )
    return Result.model_construct(
        schema_version=RESULT_SCHEMA_VERSION,
        **fields_from_command(command),
        status=status,
        connector=command.connector,
        operation=command.operation,
        output=output,
        error=error,
        attempts=attempts,
        times=times,
        trace_id=trace_id,
        spans=merged,
    )


def _headers(command: Command, kind: str, context: otel_context.Context | None) -> list[tuple[str, bytes]]:
    headers = Headers.for_command(
        command.tenant_id, command.space_id, command.command_id, kind=kind, schema="1"
    )
    inject(headers, context)
    return headers


def record_for(
    topic: str,
    command: RoutedCommand,
    payload: Result | RoutedCommand,
    kind: str,
    context: otel_context.Context | None = None,
) -> Outgoing:
    return Outgoing(
        topic=topic,
        key=command.tenant_id.encode(),
        value=payload.to_bytes(),
        headers=_headers(command, kind, context),
    )


def dead_letter_raw(topic: str, key: bytes | None, value: bytes | None, source: str) -> Outgoing:
    """An unparseable record, dead-lettered as it was (it may not even be ours)."""
    return Outgoing(
        topic=topic,
        key=key,
        value=value or b"",
        headers=[(Headers.KIND, b"unparseable"), ("sy-source-topic", source.encode())],
    )


def unreadable_result(topic: str, value: bytes | None, source: str, finished_at: datetime) -> Outgoing | None:
    """A failed final Result for a record that is no valid RoutedCommand but still holds a
    valid command (a field of a newer router, a value past a bound), so that its caller
    hears of it; None for anything else (not JSON, not ours)."""
    command = Command.known_part(value)
    if command is None:
        return None
    result = Result(
        **fields_from_command(command),
        status=ResultStatus.FAILED,
        error=ErrorInfo(
            code=ErrorCode.INTERNAL,
            message=f"a worker could not read this routed command on {source}; it was dead-lettered",
        ),
        attempts=0,
        times=StageTimes(submitted_at=command.submitted_at, finished_at=finished_at),
        spans=command.spans,
    )
    return Outgoing(
        topic=topic,
        key=command.tenant_id.encode(),
        value=result.to_bytes(),
        headers=_headers(command, KIND_RESULT, None),
    )
