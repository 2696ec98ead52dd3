"""Request and response bodies of the REST API (their JSON Schemas feed ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import Result, ResultStatus
from schemas.identifiers import (
    ActionName,
    CommandId,
    IdempotencyKey,
    RoleName,
    SpaceId,
    TenantId,
    UserId,
)

__all__ = [
    "ApiKeyCreate",
    "ApiKeyCreated",
    "BatchItemResult",
    "BatchRequest",
    "BatchResponse",
    "CommandStatus",
    "CredentialsStored",
    "ErrorBody",
    "ErrorDetail",
    "SubmitRequest",
    "SubmitResponse",
    "CLAIM_FIELDS",
    "MAX_BATCH",
    "MAX_DEADLINE_SECONDS",
]

# Fields a submission may carry besides its own: claims of the caller's tenant or
# workspace (another's is a 403, the caller's own is ignored; ``ingress.auth``).
CLAIM_FIELDS = ("tenant_id", "tenantId", "tenant", "space_id", "spaceId", "_meta")
MAX_BATCH = 500
MAX_DEADLINE_SECONDS = 86_400.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=65_536)


class SubmitRequest(_Body):
    """One command to run. The tenant, workspace and user come from the API key."""

    action: ActionName = Field(description="The workspace's logical action (an MCP tool name).")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The action's arguments.")
    idempotency_key: IdempotencyKey | None = Field(
        default=None,
        description="A replay with the same key returns the same command id and publishes "
        "nothing. The Idempotency-Key header is accepted too.",
    )
    # Strict: true, "5" or a NaN are refused, not read as 1 s, 5 s or a confusing bound.
    deadline_seconds: float | None = Field(
        default=None, gt=0, le=MAX_DEADLINE_SECONDS, strict=True, allow_inf_nan=False,
        description="Seconds from now after which the command must not run (default 300).",
    )


class SubmitResponse(_Body):
    command_id: CommandId
    status: Literal["accepted"] = "accepted"
    status_url: str
    replayed: bool = False


class CancelResponse(_Body):
    command_id: CommandId
    status: Literal["pending"] = "pending"
    cancel_requested: bool = Field(
        default=True,
        description="The workers end the command without running it if it has not started: "
        "its Result is then rejected (failed after attempts) with code cancelled.",
    )
    status_url: str


class ErrorDetail(_Body):
    code: str
    message: str
    idempotency_key: str | None = Field(
        default=None,
        description="On a 503 of a submit: the key to retry with (generated if none was given); "
        "the command may still run, and runs at most once under that key.",
    )
    command_id: CommandId | None = Field(
        default=None,
        description="On a 503 of a submit: the command id that key gives; on a 409: the command "
        "the key already names (submitted with other arguments).",
    )
    status: str | None = Field(
        default=None, description="On a 409 of a cancel: the status the command finished with."
    )


class ErrorBody(_Body):
    error: ErrorDetail


class BatchRequest(_Body):
    """Up to 500 commands. Each item is validated and published on its own."""

    items: list[SubmitRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItemResult(_Body):
    index: int
    status_code: int = Field(description="What a single POST /v1/commands would have answered.")
    command_id: CommandId | None = None
    status: Literal["accepted"] | None = None
    status_url: str | None = None
    replayed: bool | None = None
    error: ErrorDetail | None = None


class BatchResponse(_Body):
    accepted: int
    failed: int
    items: list[BatchItemResult]


class CancelBatchRequest(_Body):
    """Up to 500 commands to cancel, each as ``POST /v1/commands/{id}:cancel`` would."""

    command_ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class CancelBatchItem(_Body):
    index: int
    status_code: int = Field(description="What a single POST /v1/commands/{id}:cancel would have answered.")
    command_id: str
    status: Literal["pending"] | None = None
    cancel_requested: bool | None = None
    status_url: str | None = None
    error: ErrorDetail | None = None


class CancelBatchResponse(_Body):
    cancelled: int
    failed: int
    items: list[CancelBatchItem]


class CommandStatus(_Body):
    """``pending`` while this replica knows the command but has no result yet."""

    command_id: CommandId
    status: Literal["pending"] | ResultStatus
    result: Result | None = None


class ApiKeyCreate(_Body):
    tenant_id: TenantId
    spaces: list[SpaceId] = Field(min_length=1, max_length=256)
    user_id: UserId
    role: RoleName = "member"


class ApiKeyCreated(_Body):
    """The plaintext ``api_key`` is shown in this response only; it is stored hashed."""

    api_key: str
    key_id: str
    tenant_id: TenantId
    spaces: list[SpaceId]
    user_id: UserId
    role: RoleName


class CredentialsStored(_Body):
    tenant_id: TenantId
    connector: str
    version: int
