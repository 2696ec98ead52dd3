"""The router's shortcuts give exactly what the general code gives (pure, no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _router_support import command
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from router import MappingError, compile_mapping
from router._compose import Route, routed_bytes
from router._limits import _day
from router._mapping import _lookup_path
from schemas import Command, ConnectorOptions, RoutedCommand, SpanRecord
from schemas.trace import MAX_SPANS

_JINJA = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

_names = st.sampled_from(["a", "b", "summary", "items", "keys", "x_1", "_p", "get"])
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=3),
    max_leaves=10,
)
_step = st.one_of(
    _names.map(lambda n: f".{n}"),
    _names.map(lambda n: f"['{n}']"),
    _names.map(lambda n: f'[ "{n}" ]'),
    _names.map(lambda n: f" . {n}"),
)


def _jinja_value(expr: str, args: dict[str, Any]) -> tuple[str, Any]:
    """What the general path makes of ``{{ expr }}``: ("ok", value) or ("error", None)."""
    try:
        value = _JINJA.compile_expression(expr, undefined_to_none=False)(args=args)
        if isinstance(value, StrictUndefined):
            value._fail_with_undefined_error()
        return "ok", value
    except Exception:  # any Jinja failure is a MappingError on the router's side
        return "error", None


@given(st.lists(_step, min_size=1, max_size=4), st.dictionaries(_names, _json, max_size=4))
def test_a_lookup_chain_renders_what_the_jinja_sandbox_renders(
    steps: list[str], args: dict[str, Any]
) -> None:
    expr = "args" + "".join(steps)
    render = compile_mapping({"v": "{{ " + expr + " }}"})
    expected = _jinja_value(expr, args)
    if expected[0] == "error":
        with pytest.raises(MappingError):
            render(args)
    elif callable(expected[1]):
        # ``.items`` and friends name dict methods: not JSON, so no mapping result.
        with pytest.raises(MappingError):
            render(args)
    else:
        assert render(args) == {"v": expected[1]}


def test_lookup_chains_that_name_dict_methods_are_left_to_jinja() -> None:
    assert _lookup_path(" args.summary ") == ("summary",)
    assert _lookup_path("args['items'].b") == ("items", "b")
    assert _lookup_path("args.items") is None
    assert _lookup_path("args.__class__") is None
    assert _lookup_path("args.a + 1") is None
    assert _lookup_path("args") is None


def test_a_missing_argument_still_fails_the_mapping_on_the_shortcut() -> None:
    render = compile_mapping({"text": "{{ args.summary }}", "n": "{{ args['deep'].n }}"})
    assert render({"summary": "s", "deep": {"n": [1]}}) == {"text": "s", "n": [1]}
    with pytest.raises(MappingError):
        render({"deep": {"n": 1}})
    with pytest.raises(MappingError):
        render({"summary": "s", "deep": "not an object"})


@given(st.integers(min_value=0, max_value=5 * 10**15))
def test_the_quota_day_is_the_utc_date_of_the_moment(micros: int) -> None:
    # Whole microseconds: ``fromtimestamp`` rounds finer fractions, which may move a
    # moment less than a microsecond before midnight into the next day.
    now = micros / 1e6
    assert _day(now) == datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def test_the_quota_day_turns_exactly_at_utc_midnight() -> None:
    midnight = datetime(2030, 1, 2, tzinfo=UTC).timestamp()
    assert _day(midnight - 0.001) == "2030-01-01"
    assert _day(midnight) == "2030-01-02"


def _span(i: int, parent: bool) -> SpanRecord:
    return SpanRecord(
        trace_id=f"{i + 1:032x}",
        span_id=f"{i + 1:016x}",
        parent_span_id=f"{i + 2:016x}" if parent else None,
        name=f"hop {i}",
        kind="consumer",
        start_unix_nano=i,
        end_unix_nano=i + 5,
        attributes={"switchyard.tenant_id": "acme", "n": i, "ok": True, "x": 0.5},
    )


@given(
    earlier=st.integers(min_value=0, max_value=MAX_SPANS),
    here=st.integers(min_value=0, max_value=2),
    arguments=st.dictionaries(st.text(max_size=4), _json, max_size=3),
    resolved=st.dictionaries(st.text(max_size=4), _json, max_size=3),
    hosts=st.lists(st.sampled_from(["api.example.com", "*.hooks.example"]), max_size=2),
    micros=st.integers(min_value=0, max_value=999_999),
)
def test_the_composed_routed_record_is_the_bytes_the_model_would_write(
    earlier: int,
    here: int,
    arguments: dict[str, Any],
    resolved: dict[str, Any],
    hosts: list[str],
    micros: int,
) -> None:
    base = command("acme", arguments)
    incoming = base.model_copy(update={"spans": [_span(i, i % 2 == 0) for i in range(earlier)]})
    raw = incoming.to_bytes()
    parsed = Command.from_bytes(raw)
    spans = [_span(100 + i, True) for i in range(here)]
    routed_at = datetime(2030, 5, 6, 7, 8, 9, micros, tzinfo=UTC) + timedelta(days=micros % 3)
    options = ConnectorOptions(allowed_hosts=hosts)
    expected = (
        RoutedCommand.model_construct(
            **dict(parsed),
            connector="slack",
            operation="chat.postMessage",
            resolved_arguments=resolved,
            connector_options=options,
            routed_at=routed_at,
            errors=[],
            not_before=None,
        )
        .model_copy(update={"spans": [*parsed.spans, *spans][-MAX_SPANS:]})
        .to_bytes()
    )
    route = Route("slack", "chat.postMessage", resolved, options)
    composed = routed_bytes(raw, parsed, route, spans, routed_at)
    assert composed == expected
    parsed_routed = RoutedCommand.from_bytes(composed)
    assert len(parsed_routed.spans) == min(MAX_SPANS, earlier + here)
    if here:
        assert parsed_routed.spans[-1] == spans[-1]


def test_a_command_whose_json_orjson_refuses_is_composed_through_the_model() -> None:
    base = command("acme", {"summary": "x"})
    # NaN: taken by pydantic's JSON parser, refused by orjson's.
    raw = base.to_bytes().replace(b'"summary":"x"', b'"summary":"x","n":NaN')
    parsed = Command.from_bytes(raw)
    route = Route("slack", "chat.postMessage", {"text": "y"}, ConnectorOptions())
    routed_at = datetime(2030, 1, 1, tzinfo=UTC)
    routed = RoutedCommand.from_bytes(routed_bytes(raw, parsed, route, [_span(1, True)], routed_at))
    assert routed.arguments["summary"] == "x"
    assert routed.resolved_arguments == {"text": "y"}
    assert routed.spans == [_span(1, True)]
