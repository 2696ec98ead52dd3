"""Results: the versioned record downstream services consume from the results topic."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import AwareDatetime, Field, field_validator

from ._base import WireModel
from ._limits import check_json_bounds
from .errors import ErrorInfo
from .identifiers import (
    ActionName,
    CommandId,
    ConnectorName,
    IdempotencyKey,
    OperationName,
    SpaceId,
    TenantId,
    UserId,
)
from .trace import MAX_SPANS, SpanRecord

__all__ = [
    "FINAL_STATUSES",
    "RESULT_SCHEMA_VERSION",
    "Result",
    "ResultStatus",
    "StageTimes",
    "fields_from_command",
]

RESULT_SCHEMA_VERSION: Literal[1] = 1


class ResultStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DEAD_LETTERED = "dead_lettered"


FINAL_STATUSES = frozenset(ResultStatus)

_FROM_COMMAND = ("command_id", "tenant_id", "space_id", "user_id", "action", "idempotency_key")


def fields_from_command(command: Any) -> dict[str, Any]:
    """The fields a Result repeats of its Command or RoutedCommand."""
    return {name: getattr(command, name) for name in _FROM_COMMAND}


class StageTimes(WireModel):
    """When the command passed each stage (UTC)."""

    submitted_at: AwareDatetime
    routed_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime


class Result(WireModel):
    """The one final outcome of a command. Exactly one is written per accepted command."""

    schema_version: Literal[1] = RESULT_SCHEMA_VERSION
    command_id: CommandId
    tenant_id: TenantId
    space_id: SpaceId
    user_id: UserId
    action: ActionName
    idempotency_key: IdempotencyKey
    status: ResultStatus
    connector: ConnectorName | None = None
    operation: OperationName | None = None
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    attempts: int = Field(default=0, ge=0)
    times: StageTimes
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    spans: list[SpanRecord] = Field(default_factory=list, max_length=MAX_SPANS)

    @field_validator("output")
    @classmethod
    def _bounded_output(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_bounds(value, max_bytes=1024 * 1024)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        """Parse and validate a Result record; fields a later release added (top-level or
        nested) are skipped, as the exported schema lets every consumer skip them.

        Adding an optional field is a compatible change: workers are upgraded before the
        ingress, whose polls and waiting calls must still read what they write.

        Raises:
            pydantic.ValidationError: when the known fields are not a valid Result.
        """
        return cls.model_validate_json(data, extra="ignore")

    @property
    def ok(self) -> bool:
        return self.status is ResultStatus.SUCCEEDED
