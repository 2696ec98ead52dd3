"""Resolving one command against its workspace: access, schema, mapping (pure, no I/O).

The checks run in a fixed order so a command gets the most basic reason first:
deadline → workspace → action → enabled → connector → role → arguments → mapping.
Usage limits come last (``router._limits``) so rejected commands do not spend quota.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jsonschema.exceptions import best_match

from core.errors import PermanentError
from core.lru import LRU
from core.schema_check import SchemaBroken, SchemaCheck, checked, describe
from schemas import ActionConfig, Command, ErrorCode, WorkspaceConfig

from ._mapping import MappingError, compile_mapping

__all__ = ["ActionCache", "CompiledAction", "Resolution", "resolve"]

_MAX_MESSAGE = 300


def _clip(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class CompiledAction:
    """An action's argument check and mapping, compiled once per configuration version."""

    check: SchemaCheck | None
    schema_error: str | None
    render: Callable[[dict[str, Any]], dict[str, Any]] | None
    mapping_error: str | None


def _compile(action: ActionConfig) -> CompiledAction:
    check: SchemaCheck | None = None
    schema_error = None
    try:
        check = checked(action.input_schema)
    except SchemaBroken as exc:
        schema_error = _clip(str(exc))
    render = None
    mapping_error = None
    try:
        render = compile_mapping(action.arguments)
    except MappingError as exc:
        mapping_error = _clip(str(exc))
    return CompiledAction(check, schema_error, render, mapping_error)


class ActionCache:
    """Bounded LRU of compiled actions keyed by (tenant, space, version, action).

    The entry also remembers the ActionConfig it was compiled from: a workspace
    republished under the same version with different content is recompiled, not
    served stale. Past a tenth of the entries, a tenant makes room from its own (see
    :class:`core.lru.LRU`): one tenant's thousands of actions cannot make every other
    tenant's commands compile theirs again.
    """

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._entries: LRU[
            tuple[str, str, int, str], tuple[str, ActionConfig, CompiledAction]
        ] = LRU(size, owner=lambda kept: kept[0])

    def get(self, workspace: WorkspaceConfig, action: ActionConfig) -> CompiledAction:
        key = (workspace.tenant_id, workspace.space_id, workspace.version, action.name)
        hit = self._entries.get(key)
        if hit is not None and hit[1] is action:
            return hit[2]
        compiled = _compile(action)
        self._entries.put(key, (workspace.tenant_id, action, compiled))
        return compiled

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where an accepted command goes."""

    action: ActionConfig
    resolved_arguments: dict[str, Any]


def _reject(code: ErrorCode, message: str) -> PermanentError:
    return PermanentError(code, _clip(message, 1000))


def resolve(
    command: Command, workspace: WorkspaceConfig | None, now: datetime, cache: ActionCache
) -> Resolution:
    """Resolve ``command`` to its action and mapped arguments, or say why not.

    Raises:
        PermanentError: with the rejection code (DEADLINE_EXPIRED, UNKNOWN_WORKSPACE,
            UNKNOWN_ACTION, ACTION_DISABLED, CONNECTOR_DISABLED, ROLE_DENIED,
            INVALID_ARGUMENTS, MAPPING_FAILED or INTERNAL for a broken schema).
    """
    if command.expired(now):
        raise _reject(ErrorCode.DEADLINE_EXPIRED, "the command's deadline passed before routing")
    if workspace is None:
        raise _reject(
            ErrorCode.UNKNOWN_WORKSPACE,
            f"workspace {command.space_id!r} of tenant {command.tenant_id!r} is not configured",
        )
    action = workspace.action(command.action)
    if action is None:
        raise _reject(ErrorCode.UNKNOWN_ACTION, f"action {command.action!r} is not defined")
    if not action.enabled:
        raise _reject(ErrorCode.ACTION_DISABLED, f"action {action.name!r} is disabled")
    refused = workspace.refusal(command.role, action)
    if refused is not None:
        raise _reject(*refused)
    compiled = cache.get(workspace, action)
    try:
        if compiled.check is None:
            raise SchemaBroken(compiled.schema_error)
        error = best_match(compiled.check.errors(command.arguments))
    except SchemaBroken as exc:
        raise _reject(
            ErrorCode.INTERNAL, f"action {action.name!r} has an invalid input schema: {exc}"
        ) from None
    if error is not None:
        raise _reject(
            ErrorCode.INVALID_ARGUMENTS,
            f"arguments{error.json_path[1:]}: {describe(error)}",
        )
    if compiled.render is None:
        raise _reject(
            ErrorCode.MAPPING_FAILED, f"argument mapping does not compile: {compiled.mapping_error}"
        )
    try:
        resolved = compiled.render(command.arguments)
    except MappingError as exc:
        raise _reject(ErrorCode.MAPPING_FAILED, f"argument mapping failed: {exc}") from None
    return Resolution(action=action, resolved_arguments=resolved)
