"""Argument and credential checks shared by the connectors.

The router already validates arguments against the workspace's action schema; the
connector checks them again against its own operation schema because the mapping
between the two is tenant-written and a bad record must fail clearly, not as a vendor
400 with a confusing message. (So this is not a re-validation that could be skipped:
the router never sees the connector's schema.)

The check runs on every command, so it is a :class:`core.schema_check.SchemaCheck`: the
compiled validator decides, ``jsonschema`` words the error of an invalid record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

from core.errors import PermanentError
from core.schema_check import SchemaCheck, describe
from schemas import ErrorCode

from ._base import Connector, ConnectorCall

__all__ = ["credential", "validated"]


_CHECKS: dict[tuple[str, str], SchemaCheck] = {}


def _check(connector: type[Connector], operation: str) -> SchemaCheck:
    # Compiled once per (connector, operation): schemas are class constants.
    key = (connector.name, operation)
    check = _CHECKS.get(key)
    if check is None:
        schema = connector.operations[operation].input_schema
        Draft202012Validator.check_schema(schema)
        check = _CHECKS[key] = SchemaCheck(schema)
    return check


def validated(connector: Connector, call: ConnectorCall) -> Mapping[str, Any]:
    """The call's arguments, checked against the operation's input schema.

    Raises:
        PermanentError: UNKNOWN_ACTION for an operation the connector lacks,
            INVALID_ARGUMENTS when the arguments do not match its schema.
    """
    kind = type(connector)
    if call.operation not in kind.operations:
        raise PermanentError(
            ErrorCode.UNKNOWN_ACTION, f"{kind.name}: no operation {call.operation[:64]!r}"
        )
    error = next(_check(kind, call.operation).errors(call.arguments), None)
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "arguments"
        raise PermanentError(
            ErrorCode.INVALID_ARGUMENTS,
            f"{kind.name} {call.operation}: {where}: {describe(error)}",
        )
    return call.arguments


def credential(call: ConnectorCall, *names: str, connector: str) -> str:
    """The first non-empty credential field among ``names`` (its value, never logged).

    Raises:
        PermanentError: CREDENTIALS_MISSING naming the expected fields (not values).
    """
    for name in names:
        value = call.credentials.get(name)
        if isinstance(value, str) and value:
            return value
    raise PermanentError(
        ErrorCode.CREDENTIALS_MISSING,
        f"{connector}: credentials lack {' or '.join(names)}",
    )
