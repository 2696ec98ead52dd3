"""What the router would refuse in a workspace, found before it is published.

The admin API and ``switchyard tenants apply`` both call :func:`workspace_problem`, so
a workspace whose action could never run (an input schema that is no JSON Schema or
holds a reference that does not resolve within it, an argument mapping that does not
compile, a connector or operation no worker has, a record too large for the config
topic) is refused when it is written, not at its first call.
"""

from __future__ import annotations

from core.schema_check import schema_problem
from schemas import WorkspaceConfig
from workers.connectors import CONNECTORS

from ._mapping import MappingError, compile_mapping

__all__ = ["MAX_WORKSPACE_BYTES", "workspace_problem"]

# A workspace is one record of the config topic: the producers' and the broker's 1 MiB
# limits, less room for the record's key and headers.
MAX_WORKSPACE_BYTES = 1_000_000


def workspace_problem(workspace: WorkspaceConfig) -> str | None:
    """The first part of ``workspace`` no command could pass, and why; None if none."""
    size = len(workspace.to_bytes())
    if size > MAX_WORKSPACE_BYTES:
        return (
            f"the workspace is {size:,} bytes as JSON, more than the {MAX_WORKSPACE_BYTES:,} "
            "one config record holds; split its actions over several workspaces"
        )
    for name in workspace.connectors:
        if name not in CONNECTORS:
            return f"connectors: no connector {name[:32]!r} (there are {', '.join(CONNECTORS)})"
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
        connector = CONNECTORS.get(action.connector)
        if connector is None:
            return f"{where}: no connector {action.connector[:32]!r} (there are {', '.join(CONNECTORS)})"
        if action.operation not in connector.operations:
            return (
                f"{where}: {action.connector} has no operation {action.operation[:64]!r} "
                f"(it has {', '.join(sorted(connector.operations))})"
            )
    return None
