"""The routed record, composed from the command's own JSON instead of a model round trip.

The command's bytes were validated as a :class:`~schemas.Command` just before
(``Command.from_bytes``), so its JSON already is a valid command. A RoutedCommand is that
command plus the routing fields, with the router's span appended. Building it as a
pydantic model (``model_construct`` + ``model_copy`` + ``to_bytes``) cost about ten
times more than parsing the same bytes with orjson, adding the fields and dumping once;
the result is the same JSON (same keys, same formats: see
``tests/router/test_router_fast_paths.py``), and workers validate it as a RoutedCommand
on their side as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from schemas import Command, ConnectorOptions, RoutedCommand, SpanRecord
from schemas.trace import MAX_SPANS

__all__ = ["Route", "routed_bytes"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one accepted command goes (the fields a RoutedCommand adds to it)."""

    connector: str
    operation: str
    resolved_arguments: dict[str, Any]
    connector_options: ConnectorOptions
    # The workspace's limits.concurrency (a header of the record, not a field).
    concurrency: int = 0


def _plain(model: SpanRecord | ConnectorOptions) -> Any:
    # The JSON form ``to_bytes`` would give (None fields left out), as plain data.
    return model.__pydantic_serializer__.to_python(model, mode="json", exclude_none=True)


def _by_model(
    command: Command, route: Route, spans: list[SpanRecord], routed_at: datetime
) -> bytes:
    # Every part is validated already, so no second validation pass (model_construct).
    return (
        RoutedCommand.model_construct(
            **dict(command),
            connector=route.connector,
            operation=route.operation,
            resolved_arguments=route.resolved_arguments,
            connector_options=route.connector_options,
            routed_at=routed_at,
            # Given explicitly: model_construct inspects default factories per call.
            errors=[],
            not_before=None,
        )
        .model_copy(update={"spans": spans})
        .to_bytes()
    )


def routed_bytes(
    command_json: bytes,
    command: Command,
    route: Route,
    spans: Iterable[SpanRecord],
    routed_at: datetime,
) -> bytes:
    """The RoutedCommand record of ``command`` (parsed from ``command_json``) plus ``spans``.

    The spans come from the validated model (span attributes are unbounded numbers,
    which orjson would read as floats beyond 64 bits; the arguments are bounded to 64
    bits by validation). JSON that orjson does not take as it is (a lone surrogate
    escape, say) goes the model's way.
    """
    spans = [*command.spans, *spans][-MAX_SPANS:]
    try:
        record: dict[str, Any] = orjson.loads(command_json)
        record["spans"] = [_plain(s) for s in spans]
        record["connector"] = route.connector
        record["operation"] = route.operation
        record["resolved_arguments"] = route.resolved_arguments
        record["connector_options"] = _plain(route.connector_options)
        record["routed_at"] = routed_at
        record["errors"] = []
        # OPT_UTC_Z: pydantic writes UTC datetimes with "Z"; the rest is formatted alike.
        return orjson.dumps(record, option=orjson.OPT_UTC_Z)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return _by_model(command, route, spans, routed_at)
