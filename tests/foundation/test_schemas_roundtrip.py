"""Wire models: lossless round-trips through Kafka bytes, and strict input."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas import Command, Result, RoutedCommand, WireModel, WorkspaceConfig, lost_integer_digits

from ._strategies import commands, results, routed_commands, safe_ids, workspaces

relaxed = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Rejection checks vary the rest of the record; a few examples are enough.
few = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _roundtrip(model: WireModel) -> None:
    again = type(model).from_bytes(model.to_bytes())
    assert again == model
    assert again.to_bytes() == model.to_bytes()


@relaxed
@given(commands)
def test_command_survives_to_bytes_and_from_bytes(command: Command) -> None:
    _roundtrip(command)


@relaxed
@given(routed_commands)
def test_routed_command_survives_to_bytes_and_from_bytes(routed: RoutedCommand) -> None:
    _roundtrip(routed)


@relaxed
@given(results)
def test_result_survives_to_bytes_and_from_bytes(result: Result) -> None:
    _roundtrip(result)


@relaxed
@given(workspaces)
def test_workspace_config_survives_to_bytes_and_from_bytes(workspace: WorkspaceConfig) -> None:
    _roundtrip(workspace)


def _with(model: BaseModel, **changes: Any) -> bytes:
    data = orjson.loads(model.to_bytes())  # type: ignore[attr-defined]
    data.update(changes)
    return orjson.dumps(data)


@relaxed
@given(
    st.one_of(commands, routed_commands, results, workspaces),
    st.from_regex(r"\A[a-z_]{1,20}\Z"),
)
def test_unknown_fields_are_rejected_but_by_a_results_reader(model: WireModel, field: str) -> None:
    if field in type(model).model_fields:
        field = f"{field}_extra"
    if isinstance(model, Result):
        # A Result's later-release field is skipped, as the exported schema lets every
        # consumer skip it (workers are upgraded before the ingress that reads them).
        assert Result.from_bytes(_with(model, **{field: 1})) == model
        return
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        type(model).from_bytes(_with(model, **{field: 1}))


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@few
@given(commands)
def test_arguments_nested_deeper_than_16_levels_are_rejected(command: Command) -> None:
    assert Command.from_bytes(_with(command, arguments=_nested(16)))  # the limit itself is fine
    with pytest.raises(ValidationError, match="nests deeper"):
        Command.from_bytes(_with(command, arguments=_nested(17)))


@few
@given(commands, routed_commands)
def test_oversize_arguments_are_rejected(command: Command, routed: RoutedCommand) -> None:
    big = {f"k{i}": "x" * 60_000 for i in range(5)}  # each string fits, the whole does not
    with pytest.raises(ValidationError, match="more than the 262144 allowed"):
        Command.from_bytes(_with(command, arguments=big))
    with pytest.raises(ValidationError, match="more than the 262144 allowed"):
        RoutedCommand.from_bytes(_with(routed, resolved_arguments=big))


def test_arguments_that_are_a_hostile_deep_list_are_rejected_without_recursion_error() -> None:
    deep: Any = []
    for _ in range(50_000):
        deep = [deep]
    command = {
        "command_id": "c1234567",
        "tenant_id": "acme",
        "space_id": "sales",
        "user_id": "u1",
        "role": "member",
        "action": "echo",
        "arguments": {"x": deep},
        "idempotency_key": "k",
        "submitted_at": "2026-01-01T00:00:00Z",
        "deadline": "2026-01-01T00:01:00Z",
        "source": "rest",
    }
    with pytest.raises(ValidationError):
        Command.model_validate(command)


def safe_ids_match(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_]{1,64}", value) is not None


unsafe_ids = st.one_of(
    st.just(""),
    st.text(min_size=65, max_size=80, alphabet="abc"),
    st.text(min_size=1, max_size=20).filter(lambda s: not safe_ids_match(s)),
    st.sampled_from(
        ["acme-slack", "a*", "../beta", "acme/slack", "t-*-slack", "acme beta", "acmé"]
    ),
)


@relaxed
@given(st.one_of(commands, results, workspaces), unsafe_ids)
def test_unsafe_tenant_ids_are_rejected(model: WireModel, tenant_id: str) -> None:
    with pytest.raises(ValidationError, match="tenant_id"):
        type(model).from_bytes(_with(model, tenant_id=tenant_id))


@relaxed
@given(safe_ids)
def test_safe_tenant_ids_are_accepted(tenant_id: str) -> None:
    workspace = WorkspaceConfig(tenant_id=tenant_id, space_id="sales")
    assert WorkspaceConfig.from_bytes(workspace.to_bytes()).tenant_id == tenant_id


@pytest.mark.parametrize(
    ("raw", "lost"),
    [
        (b'{"n": 18446744073709551617}', True),  # past u64: orjson reads a float
        (b'{"n": [1, -9223372036854775809]}', True),  # below i64
        (b'{"n": 18446744073709551615}', False),  # u64's largest: read exactly
        (b'{"n": -9223372036854775808}', False),
        (b'{"s": "id:18446744073709551617,"}', False),  # in a string: no number at all
        (b'{"n": 1.8446744073709552e+19}', False),  # written as a float
        (b'{"n": 12345678901234567890.5}', False),
        # A long run that lost nothing beside a large float the caller sent.
        (b'{"id": 1234567890123456789, "scale": 1e20}', False),
        (b'{"text": "order: 12345678901234567890", "n": 2.5e19}', False),
        (b'{"s": "x:' + b"9" * 5000 + b'"}', False),
    ],
)
def test_an_integer_past_64_bits_is_told_from_a_float_or_a_string(raw: bytes, lost: bool) -> None:
    assert lost_integer_digits(raw, orjson.loads(raw)) is lost
