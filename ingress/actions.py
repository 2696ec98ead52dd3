"""Is this call one the caller's workspace runs? Checked at the edge, before publishing.

The router decides again when it routes (the configuration may change in between); this
check answers a caller at once, for MCP ``tools/call`` and REST submissions alike: an
action the workspace does not have, has disabled or does not let the key's role call,
and arguments that break the action's input schema. Compiling a schema costs far more
than validating, so the compiled validator of each (workspace, action) is kept while the
directory serves that very workspace object (any configuration change is a new object).
"""

from __future__ import annotations

import logging
from typing import Any

import jsonschema

from core.schema_check import SchemaBroken, SchemaCheck, checked, describe
from schemas import ActionConfig, WorkspaceConfig

from ._bounded import LRU
from .contracts import Catalog, Identity
from .errors import BadRequest

__all__ = ["ActionChecks", "ArgumentsInvalid", "UnknownAction", "tool_schema"]

logger = logging.getLogger(__name__)


class UnknownAction(BadRequest):
    """Not an action the caller may call here (made up, disabled, or not for its role)."""

    code = "unknown_action"


class ArgumentsInvalid(BadRequest):
    """Arguments that break the action's input schema."""

    code = "invalid_arguments"

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"arguments at {where}: {why}")
        self.where, self.why = where, why


class ActionChecks:
    """The checks of one process, with their compiled validators (bounded, per tenant)."""

    def __init__(self, catalog: Catalog, *, capacity: int = 1024) -> None:
        self._catalog = catalog
        # Past a tenth, a tenant's actions make room from its own: one tenant's thousands
        # of workspaces cannot make every other tenant's calls compile their schemas again.
        self._compiled: LRU[tuple[str, str, str], tuple[WorkspaceConfig, ActionConfig, SchemaCheck]] = LRU(
            capacity, owner=lambda kept: kept[0].tenant_id
        )

    def __len__(self) -> int:
        return len(self._compiled)

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self._compiled

    def check(self, identity: Identity, name: str, arguments: dict[str, Any]) -> ActionConfig:
        """The enabled action ``name`` of the caller's workspace, ``arguments`` checked.

        Raises:
            UnknownAction: no such enabled action, or the caller's role may not call it.
            ArgumentsInvalid: the arguments break the action's input schema.
        """
        action, check = self.action(identity, name)
        self.validate(check, arguments)
        return action

    def action(self, identity: Identity, name: str) -> tuple[ActionConfig, SchemaCheck]:
        """The enabled action ``name`` the caller may call, and its arguments validator.

        Raises:
            UnknownAction: no such enabled action, or the caller's role may not call it.
        """
        workspace = self._catalog.workspace(identity.tenant_id, identity.space_id)
        key = (identity.tenant_id, identity.space_id, name)
        cached = self._compiled.get(key)
        if cached is not None and cached[0] is workspace:
            _, action, check = cached
        else:
            found, compiled = _compile(workspace, name)
            if found is None or compiled is None or workspace is None:
                # Not kept: made-up names must not push real actions out.
                raise UnknownAction(f"no action {name[:64]!r} in this workspace")
            action, check = found, compiled
            self._compiled.put(key, (workspace, action, check))
        if workspace is None or workspace.refusal(identity.role, action) is not None:
            # The same answer as a made-up name: what a role may not call is not listed.
            raise UnknownAction(f"no action {name[:64]!r} in this workspace")
        return action, check

    @staticmethod
    def validate(check: SchemaCheck, arguments: dict[str, Any]) -> None:
        """
        Raises:
            ArgumentsInvalid: ``arguments`` break the schema ``check`` was compiled from.
        """
        try:
            error = jsonschema.exceptions.best_match(check.errors(arguments))
        except SchemaBroken:
            error = None  # not decided here: the router rejects the call with the reason
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "(root)"
            raise ArgumentsInvalid(where, describe(error))


def _compile(workspace: WorkspaceConfig | None, name: str) -> tuple[ActionConfig | None, SchemaCheck | None]:
    """The enabled action ``name`` of ``workspace`` and its arguments validator;
    ``(None, None)`` when the workspace has no such enabled action."""
    action = workspace.action(name) if workspace is not None else None
    if action is None or not action.enabled:
        return None, None
    try:
        return action, checked(tool_schema(action))
    except SchemaBroken:
        # A broken schema in the configuration must not make the action uncallable;
        # the router validates again with the same schema (and rejects the call).
        logger.warning("input schema of action %s is invalid; not validating", name)
        return action, checked({"type": "object"})


def tool_schema(action: ActionConfig) -> dict[str, Any]:
    """The action's input schema as MCP lists it: an object schema at the root."""
    # An action configured with another root type still takes an arguments object, so it
    # is exposed as a plain object.
    schema = dict(action.input_schema)
    schema.setdefault("type", "object")
    if schema["type"] != "object":
        return {"type": "object"}
    # The shape MCP's Tool.inputSchema declares: one action configured past the checks
    # (the admin API and `tenants apply` refuse it) must not fail the whole tools/list.
    properties, required = schema.get("properties"), schema.get("required")
    if (properties is not None and not isinstance(properties, dict)) or (
        required is not None
        and not (isinstance(required, list) and all(isinstance(name, str) for name in required))
    ):
        logger.warning("input schema of action %s is invalid; listed as a plain object", action.name)
        return {"type": "object"}
    return schema
