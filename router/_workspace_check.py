"""What the router would refuse in a workspace, found before it is published.

The admin API and ``switchyard tenants apply`` both call :func:`workspace_problem`, so
a workspace whose action could never run (an input schema that is no JSON Schema or
holds a reference that does not resolve within it, an argument mapping that does not
compile) is refused when it is written, not at its first call.
"""

from __future__ import annotations

from core.schema_check import schema_problem
from schemas import WorkspaceConfig

from ._mapping import MappingError, compile_mapping

__all__ = ["workspace_problem"]


def workspace_problem(workspace: WorkspaceConfig) -> str | None:
    """The first action of ``workspace`` the router would refuse, and why; None if none."""
    for action in workspace.actions:
        where = f"action {action.name!r}"
        problem = schema_problem(action.input_schema)
        if problem is not None:
            return f"{where}: invalid input_schema: {problem}"
        kind = action.input_schema.get("type")
        if kind is not None and kind != "object":
            # MCP tools take named arguments (tools/list advertises an object), and REST
            # arguments are a JSON object: no call of it could ever pass the router.
            return f"{where}: input_schema must describe an object of named arguments, not type {kind!r}"
        try:
            compile_mapping(action.arguments)
        except MappingError as exc:
            return f"{where}: invalid argument mapping: {exc}"
    return None
