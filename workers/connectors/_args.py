"""Argument and credential checks shared by the connectors.

The router already validates arguments against the workspace's action schema; the
connector checks them again against its own operation schema because the mapping
between the two is tenant-written and a bad record must fail clearly, not as a vendor
400 with a confusing message. (So this is not a re-validation that could be skipped:
the router never sees the connector's schema.)

The check runs on every command, so it uses ``jsonschema_rs`` (compiled, ~1 µs) to
decide; ``jsonschema``, ~200 µs per call here, runs only for an invalid record, to word
the error exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

from core.errors import PermanentError
from schemas import ErrorCode

from ._base import Connector, ConnectorCall

__all__ = ["credential", "validated"]


_VALIDATORS: dict[tuple[str, str], Draft202012Validator] = {}
_FAST: dict[tuple[str, str], jsonschema_rs.Draft202012Validator] = {}


def _validator(connector: type[Connector], operation: str) -> Draft202012Validator:
    # Compiled once per (connector, operation): schemas are class constants.
    key = (connector.name, operation)
    validator = _VALIDATORS.get(key)
    if validator is None:
        schema = connector.operations[operation].input_schema
        Draft202012Validator.check_schema(schema)
        validator = _VALIDATORS[key] = Draft202012Validator(schema)
    return validator


def _fast(connector: type[Connector], operation: str) -> jsonschema_rs.Draft202012Validator:
    key = (connector.name, operation)
    validator = _FAST.get(key)
    if validator is None:
        _validator(connector, operation)  # the schema is checked there, once
        schema = dict(connector.operations[operation].input_schema)
        validator = _FAST[key] = jsonschema_rs.Draft202012Validator(schema)
    return validator


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
    if _fast(kind, call.operation).is_valid(call.arguments):
        return call.arguments
    error = next(iter(_validator(kind, call.operation).iter_errors(call.arguments)), None)
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "arguments"
        raise PermanentError(
            ErrorCode.INVALID_ARGUMENTS,
            f"{kind.name} {call.operation}: {where}: {error.message[:200]}",
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
