"""Spans carried with commands and results, so a results-topic consumer sees how a command ran."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from ._base import WireModel

__all__ = ["SpanRecord", "MAX_SPANS"]

MAX_SPANS = 64

AttributeValue = str | int | float | bool


class SpanRecord(WireModel):
    """One finished OpenTelemetry span, in the shape of OTLP's JSON span."""

    trace_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    span_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    parent_span_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] | None = None
    name: Annotated[str, StringConstraints(max_length=128)]
    kind: Literal["internal", "server", "client", "producer", "consumer"] = "internal"
    start_unix_nano: int = Field(ge=0)
    end_unix_nano: int = Field(ge=0)
    status: Literal["unset", "ok", "error"] = "unset"
    attributes: dict[Annotated[str, StringConstraints(max_length=128)], AttributeValue] = Field(
        default_factory=dict, max_length=32
    )
