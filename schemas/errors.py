"""Errors as data: what crosses Kafka when a command fails or is rejected."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from ._base import WireModel

__all__ = ["ErrorCode", "ErrorInfo"]


# A new code goes into Results only a release after it is added here: an ingress
# validates each Result's code against these and drops a record whose code it does not
# know, so while ingresses of before run, such a Result never reaches their callers.
class ErrorCode(StrEnum):
    """Stable machine-readable reasons. Consumers switch on these; never rename one."""

    # Rejections by the router (final, nothing ran).
    UNKNOWN_ACTION = "unknown_action"
    INVALID_ARGUMENTS = "invalid_arguments"
    MAPPING_FAILED = "mapping_failed"
    ACTION_DISABLED = "action_disabled"
    CONNECTOR_DISABLED = "connector_disabled"
    ROLE_DENIED = "role_denied"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    DEADLINE_EXPIRED = "deadline_expired"
    UNKNOWN_WORKSPACE = "unknown_workspace"
    # Failures while executing (workers).
    CREDENTIALS_MISSING = "credentials_missing"
    CREDENTIALS_INVALID = "credentials_invalid"
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_REJECTED = "upstream_rejected"
    HOST_NOT_ALLOWED = "host_not_allowed"
    CIRCUIT_OPEN = "circuit_open"
    RETRIES_EXHAUSTED = "retries_exhausted"
    INTERNAL = "internal"
    # Its caller cancelled it before it ran (rejected), or between attempts (failed).
    CANCELLED = "cancelled"


class ErrorInfo(WireModel):
    """Why a command did not succeed. ``message`` is for people and never holds a secret."""

    code: ErrorCode
    message: Annotated[str, StringConstraints(max_length=2_000)]
    retryable: bool = False
    retry_after: float | None = Field(default=None, ge=0)
    # Upstream HTTP status when the error came from a connector's API.
    http_status: int | None = Field(default=None, ge=100, le=599)
