"""Commands: what the ingress publishes and the router fans out."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, Field, ValidationError, field_validator

from ._base import WireModel
from ._limits import check_json_bounds
from .errors import ErrorInfo
from .identifiers import (
    ActionName,
    CommandId,
    ConnectorName,
    IdempotencyKey,
    OperationName,
    RoleName,
    SpaceId,
    TenantId,
    UserId,
)
from .trace import MAX_SPANS, SpanRecord

__all__ = [
    "Command",
    "CommandSource",
    "ConnectorOptions",
    "RoutedCommand",
    "TaskCancel",
    "COMMAND_SCHEMA_VERSION",
    "command_id_for",
]

COMMAND_SCHEMA_VERSION: Literal[1] = 1


def command_id_for(tenant_id: str, space_id: str, idempotency_key: str) -> str:
    """The command id of ``idempotency_key`` in a tenant's workspace: the same on every replica.

    Keys are unique per workspace, so two workspaces of a tenant may use one key for two
    commands. Until 2026-11-29 ids came from tenant and key alone (keys were unique per
    tenant); :meth:`Command.keyed_per_workspace` tells the two apart, so a command
    published before keeps its tenant-wide key to the end.
    """
    digest = hashlib.sha256(
        f"switchyard\0{tenant_id}\0{space_id}\0{idempotency_key}".encode()
    ).digest()
    # Base32 encodes 5-byte groups on their own: the first 20 bytes give the same first
    # 32 characters as the whole digest, at half the encoding work.
    return base64.b32encode(digest[:20])[:26].lower().decode()


class CommandSource(StrEnum):
    MCP = "mcp"
    REST = "rest"


class Command(WireModel):
    """One tool call, with the caller's identity as the ingress authenticated it.

    ``tenant_id``, ``space_id``, ``user_id`` and ``role`` come from the API key that
    made the call, never from the caller's payload.
    """

    schema_version: Literal[1] = COMMAND_SCHEMA_VERSION
    command_id: CommandId
    tenant_id: TenantId
    space_id: SpaceId
    user_id: UserId
    role: RoleName
    action: ActionName
    arguments: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: IdempotencyKey
    submitted_at: AwareDatetime
    deadline: AwareDatetime
    attempt: int = Field(default=1, ge=1, le=100)
    source: CommandSource
    # Spans of the hops already taken (ingress, router), so the final Result carries the
    # whole trace even for consumers that have no tracing backend.
    spans: list[SpanRecord] = Field(default_factory=list, max_length=MAX_SPANS)

    @field_validator("arguments")
    @classmethod
    def _bounded_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_json_bounds(value)

    def expired(self, now: datetime) -> bool:
        return now >= self.deadline

    @classmethod
    def known_part(cls, record: bytes | None) -> Command | None:
        """The command in a record that is no valid Command as a whole (a field of a later
        release, say) when its known fields make one; None for anything else."""
        try:
            data = orjson.loads(record or b"")
            if not isinstance(data, dict):
                return None
            return cls.model_validate({name: data[name] for name in Command.model_fields if name in data})
        except (ValidationError, ValueError, TypeError):  # orjson's errors are ValueErrors
            return None

    def keyed_per_workspace(self) -> bool:
        """Whether the idempotency key is unique in the workspace (the id says so: every
        command an ingress published since 2026-11-29) or in the tenant (before). Read
        from the id, not a field, so that routers and workers of before still read
        every command during an upgrade."""
        return self.command_id == command_id_for(self.tenant_id, self.space_id, self.idempotency_key)


class TaskCancel(WireModel):
    """A client cancelled a command (REST ``:cancel``, MCP ``tasks/cancel``, a call it
    gave up on).

    Published on the cancels topic, which every worker process follows: a worker ends
    the command without running it if it has not started. And after the command on the
    commands topic, where the router skips it and every ingress replica reads it, so the
    command's MCP task reads as cancelled wherever the client asks. Records of this kind
    carry the header ``sy-kind: task-cancel``.
    """

    command_id: CommandId
    tenant_id: TenantId
    space_id: SpaceId
    cancelled_at: AwareDatetime


class ConnectorOptions(WireModel):
    """Per-workspace, non-secret settings for one connector."""

    # HTTP/webhook connector: hosts this workspace may call ("api.example.com", "*.hooks.example").
    allowed_hosts: list[str] = Field(default_factory=list, max_length=64)


class RoutedCommand(Command):
    """A Command after the router resolved it to one connector operation.

    ``arguments`` are the caller's; ``resolved_arguments`` are what the connector
    operation receives after the workspace's argument mapping.
    """

    connector: ConnectorName
    operation: OperationName
    resolved_arguments: dict[str, Any] = Field(default_factory=dict)
    connector_options: ConnectorOptions = Field(default_factory=ConnectorOptions)
    routed_at: AwareDatetime
    # Failed attempts so far (the retry tiers and the dead-letter topic keep the history).
    errors: list[ErrorInfo] = Field(default_factory=list, max_length=100)
    # When a retry tier may run this attempt (unset for the first attempt).
    not_before: AwareDatetime | None = None

    @field_validator("resolved_arguments")
    @classmethod
    def _bounded_resolved(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_json_bounds(value)
