"""Hypothesis strategies for the wire models (valid values only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas import (
    ActionConfig,
    Command,
    CommandSource,
    ConnectorOptions,
    ErrorCode,
    ErrorInfo,
    Limits,
    Result,
    ResultStatus,
    RolePolicy,
    RoutedCommand,
    SpanRecord,
    StageTimes,
    WorkspaceConfig,
)

__all__ = ["commands", "json_objects", "results", "routed_commands", "safe_ids", "workspaces"]

safe_ids = st.from_regex(r"\A[A-Za-z0-9_]{1,64}\Z")
connector_names = st.from_regex(r"\A[a-z0-9_]{1,32}\Z")
action_names = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")
operation_names = st.from_regex(r"\A[A-Za-z0-9_.]{1,64}\Z")
user_ids = st.from_regex(r"\A[A-Za-z0-9_.@+-]{1,128}\Z")
command_ids = st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z")
idempotency_keys = st.from_regex(r"\A[\x21-\x7e]{1,255}\Z")
hex32 = st.from_regex(r"\A[0-9a-f]{32}\Z")
hex16 = st.from_regex(r"\A[0-9a-f]{16}\Z")
# JSON text cannot carry lone surrogates; orjson refuses them.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)

# Whole-minute offsets: what ISO 8601 text keeps exactly.
zones = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC) | zones
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(text, json_values, max_size=5)

errors = st.builds(
    ErrorInfo,
    code=st.sampled_from(ErrorCode),
    message=text,
    retryable=st.booleans(),
    retry_after=st.none() | st.floats(0, 3600),
    http_status=st.none() | st.integers(100, 599),
)
spans = st.builds(
    SpanRecord,
    trace_id=hex32,
    span_id=hex16,
    parent_span_id=st.none() | hex16,
    name=st.text(max_size=20, alphabet="abcdefghij."),
    kind=st.sampled_from(["internal", "server", "client", "producer", "consumer"]),
    start_unix_nano=st.integers(0, 2**62),
    end_unix_nano=st.integers(0, 2**62),
    status=st.sampled_from(["unset", "ok", "error"]),
    attributes=st.dictionaries(
        st.text(max_size=10, alphabet="abcdefgh."),
        st.integers(-(2**53), 2**53) | st.booleans() | st.text(max_size=10, alphabet="xyz"),
        max_size=4,
    ),
)

_command_fields: dict[str, st.SearchStrategy[Any]] = {
    "command_id": command_ids,
    "tenant_id": safe_ids,
    "space_id": safe_ids,
    "user_id": user_ids,
    "role": safe_ids,
    "action": action_names,
    "arguments": json_objects,
    "idempotency_key": idempotency_keys,
    "submitted_at": moments,
    "deadline": moments,
    "attempt": st.integers(1, 100),
    "source": st.sampled_from(CommandSource),
    "spans": st.lists(spans, max_size=2),
}

commands = st.builds(Command, **_command_fields)
routed_commands = st.builds(
    RoutedCommand,
    **_command_fields,
    connector=connector_names,
    operation=operation_names,
    resolved_arguments=json_objects,
    connector_options=st.builds(ConnectorOptions, allowed_hosts=st.lists(text, max_size=3)),
    routed_at=moments,
    errors=st.lists(errors, max_size=2),
    not_before=st.none() | moments,
)
results = st.builds(
    Result,
    command_id=command_ids,
    tenant_id=safe_ids,
    space_id=safe_ids,
    user_id=user_ids,
    action=action_names,
    idempotency_key=idempotency_keys,
    status=st.sampled_from(ResultStatus),
    connector=st.none() | connector_names,
    operation=st.none() | operation_names,
    output=st.none() | json_objects,
    error=st.none() | errors,
    attempts=st.integers(0, 100),
    times=st.builds(
        StageTimes,
        submitted_at=moments,
        routed_at=st.none() | moments,
        started_at=st.none() | moments,
        finished_at=moments,
    ),
    trace_id=st.none() | hex32,
    spans=st.lists(spans, max_size=2),
)
actions = st.builds(
    ActionConfig,
    name=action_names,
    description=text,
    input_schema=st.just({"type": "object"}) | json_objects,
    connector=connector_names,
    operation=operation_names,
    arguments=json_objects,
    enabled=st.booleans(),
    roles=st.lists(safe_ids, max_size=3),
)
workspaces = st.builds(
    WorkspaceConfig,
    tenant_id=safe_ids,
    space_id=safe_ids,
    version=st.integers(1, 10_000),
    display_name=text,
    actions=st.lists(actions, max_size=4, unique_by=lambda a: a.name),
    connectors=st.dictionaries(
        connector_names,
        st.builds(ConnectorOptions, allowed_hosts=st.lists(text, max_size=2)),
        max_size=3,
    ),
    limits=st.builds(
        Limits,
        rate_per_second=st.floats(0.001, 100_000),
        burst=st.integers(1, 1_000_000),
        concurrency=st.integers(1, 1024),
        daily_quota=st.none() | st.integers(0, 10**9),
    ),
    roles=st.dictionaries(
        safe_ids,
        st.builds(
            RolePolicy,
            actions=st.lists(action_names, max_size=3),
            connectors=st.lists(connector_names, max_size=3),
        ),
        max_size=3,
    ),
)
