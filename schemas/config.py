"""Tenant/workspace configuration and API keys: the records of the compacted config topic.

The config topic is keyed by :func:`workspace_key` / :func:`api_key_key`; a tombstone
(null value) deletes. The router materialises workspaces from it; every ingress replica
materialises API keys and workspaces, so any replica can serve any tenant.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, StringConstraints, field_validator, model_validator

from ._base import WireModel
from ._limits import check_json_bounds
from .command import ConnectorOptions
from .errors import ErrorCode
from .identifiers import (
    ActionName,
    ConnectorName,
    OperationName,
    RoleName,
    SpaceId,
    TenantId,
    UserId,
)

__all__ = [
    "ActionConfig",
    "ApiKeyRecord",
    "ConfigRecord",
    "Limits",
    "RolePolicy",
    "WorkspaceConfig",
    "api_key_key",
    "workspace_key",
]


class ActionConfig(WireModel):
    """One logical action of a workspace, exposed to agents as an MCP tool.

    ``arguments`` is the argument mapping: a JSON structure whose string leaves are
    Jinja2 templates rendered (sandboxed) with the caller's arguments as ``args``,
    e.g. ``{"channel": "#daily", "text": "{{ args.summary }}"}``. A leaf that is
    exactly one ``{{ expression }}`` keeps the expression's type.
    """

    name: ActionName
    description: Annotated[str, StringConstraints(max_length=2_000)] = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    connector: ConnectorName
    operation: OperationName
    arguments: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    # Roles allowed to call this action; empty means every role the workspace knows.
    roles: list[RoleName] = Field(default_factory=list, max_length=64)

    @field_validator("input_schema", "arguments")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_json_bounds(value, max_bytes=64 * 1024)

    def undeclared(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``arguments`` but the ones its input schema declares (those are the target
        app's data, e.g. a Jira site's "tenant", never a claim of a tenant)."""
        properties = self.input_schema.get("properties")
        declared = properties if isinstance(properties, dict) else {}
        return {k: v for k, v in arguments.items() if k not in declared}


class Limits(WireModel):
    """Usage limits of one workspace (the router and the workers enforce them)."""

    rate_per_second: float = Field(default=50.0, gt=0, le=100_000)
    burst: int = Field(default=100, ge=1, le=1_000_000)
    # Commands of this tenant a worker process runs at the same time.
    concurrency: int = Field(default=8, ge=1, le=1_024)
    daily_quota: int | None = Field(default=None, ge=0)


class RolePolicy(WireModel):
    """What one role of the workspace may call. ``"*"`` allows all."""

    actions: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=lambda: ["*"], max_length=256
    )
    connectors: list[Annotated[str, StringConstraints(max_length=32)]] = Field(
        default_factory=lambda: ["*"], max_length=64
    )


class WorkspaceConfig(WireModel):
    """Everything the router needs to resolve and police one workspace's commands."""

    kind: Literal["workspace"] = "workspace"
    tenant_id: TenantId
    space_id: SpaceId
    version: int = Field(default=1, ge=1)
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    actions: list[ActionConfig] = Field(default_factory=list, max_length=500)
    # Enabled connectors with their non-secret options; a connector not listed is disabled.
    connectors: dict[ConnectorName, ConnectorOptions] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    roles: dict[RoleName, RolePolicy] = Field(
        default_factory=lambda: {"admin": RolePolicy(), "member": RolePolicy()}
    )

    @model_validator(mode="after")
    def _unique_action_names(self) -> WorkspaceConfig:
        names = [action.name for action in self.actions]
        if len(names) != len(set(names)):
            raise ValueError("action names must be unique within a workspace")
        return self

    def action(self, name: str) -> ActionConfig | None:
        return next((a for a in self.actions if a.name == name), None)

    def refusal(self, role: str, action: ActionConfig) -> tuple[ErrorCode, str] | None:
        """Why a caller with ``role`` may not call the enabled ``action``; None if it may.

        The router's rule (it refuses such a command) and what MCP ``tools/list`` offers.
        """
        if action.connector not in self.connectors:
            return ErrorCode.CONNECTOR_DISABLED, f"connector {action.connector!r} is not enabled in this workspace"
        policy = self.roles.get(role)
        if policy is None:
            return ErrorCode.ROLE_DENIED, f"role {role!r} is not defined here"
        if (action.roles and role not in action.roles) or not _allowed(policy.actions, action.name):
            return ErrorCode.ROLE_DENIED, f"role {role!r} may not call action {action.name!r}"
        if not _allowed(policy.connectors, action.connector):
            return ErrorCode.ROLE_DENIED, f"role {role!r} may not use connector {action.connector!r}"
        return None


def _allowed(patterns: list[str], name: str) -> bool:
    return "*" in patterns or name in patterns


class ApiKeyRecord(WireModel):
    """An API key as stored: a salted hash, never the key itself.

    A key is presented as ``sy_<key_id>_<secret>``; ``key_id`` finds the record and the
    secret is checked against ``secret_hash`` (scrypt over ``salt``).
    """

    kind: Literal["api_key"] = "api_key"
    key_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{8,32}$")]
    tenant_id: TenantId
    spaces: list[SpaceId] = Field(min_length=1, max_length=256)
    user_id: UserId
    role: RoleName
    salt: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    secret_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    created_at: AwareDatetime
    revoked: bool = False


ConfigRecord = Annotated[WorkspaceConfig | ApiKeyRecord, Field(discriminator="kind")]


def workspace_key(tenant_id: str, space_id: str) -> str:
    """Config-topic key of a workspace (ids cannot contain ':')."""
    return f"workspace:{tenant_id}:{space_id}"


def api_key_key(key_id: str) -> str:
    """Config-topic key of an API key record."""
    return f"api_key:{key_id}"
