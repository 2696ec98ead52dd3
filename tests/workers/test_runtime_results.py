"""The final Result built without re-validation: same bytes as a validated one, same bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import ErrorCode, ErrorInfo, Result, ResultStatus, RoutedCommand, SpanRecord
from schemas._limits import MAX_JSON_DEPTH, check_json_bounds, json_depth_exceeds
from workers._results import KIND_RESULT, MAX_OUTPUT_BYTES, build_result, record_for

_STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _command() -> RoutedCommand:
    return RoutedCommand(
        command_id="cmd_0123456789",
        tenant_id="tenant_a",
        space_id="main",
        user_id="user@example.com",
        role="member",
        action="daily_summary",
        arguments={"summary": "hi"},
        idempotency_key="idem-1",
        submitted_at=_STAMP,
        deadline=_STAMP + timedelta(seconds=60),
        source="mcp",
        connector="slack",
        operation="chat.postMessage",
        resolved_arguments={"channel": "#general", "text": "hi"},
        routed_at=_STAMP + timedelta(milliseconds=3),
        spans=[_span("router.route", "1" * 16)],
    )


def _span(name: str, span_id: str) -> SpanRecord:
    return SpanRecord(
        trace_id="a" * 32,
        span_id=span_id,
        name=name,
        kind="consumer",
        start_unix_nano=1,
        end_unix_nano=2,
        attributes={"switchyard.tenant_id": "tenant_a"},
    )


def _build(status: ResultStatus = ResultStatus.SUCCEEDED, **overrides: Any) -> Result:
    values: dict[str, Any] = {
        "output": {"channel": "C1", "ts": "1.000"},
        "error": None,
        "attempts": 1,
        "started_at": _STAMP + timedelta(milliseconds=5),
        "finished_at": _STAMP + timedelta(milliseconds=9),
        "trace_id": "a" * 32,
        "spans": [_span("worker.execute", "2" * 16)],
    }
    values.update(overrides)
    return build_result(_command(), status, **values)


def test_built_result_has_the_bytes_of_a_validated_result():
    for result in (
        _build(),
        _build(
            status=ResultStatus.FAILED,
            output=None,
            error=ErrorInfo(code=ErrorCode.UPSTREAM_REJECTED, message="no", http_status=400),
            started_at=None,
            trace_id=None,
        ),
    ):
        raw = result.to_bytes()
        validated = Result.from_bytes(raw)
        assert validated == result
        assert validated.to_bytes() == raw
        assert [span.name for span in result.spans] == ["router.route", "worker.execute"]


def test_built_result_travels_as_a_record_keyed_by_tenant():
    record = record_for("p.results", _command(), _build(), KIND_RESULT)
    assert record.key == b"tenant_a"
    assert Result.from_bytes(record.value).output == {"channel": "C1", "ts": "1.000"}
    assert ("sy-kind", b"result") in record.headers


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


def test_output_beyond_the_result_bounds_is_refused_like_result_refuses_it():
    too_deep = _deep(MAX_JSON_DEPTH + 1)
    too_big = {"text": "x" * 1024 * 1024}
    long_key = {"k" * 70_000: 1}
    not_json = {"when": object()}
    for output in (too_deep, too_big, long_key, not_json):
        with pytest.raises(ValueError):
            Result(**{**_build().model_dump(), "output": output})
        with pytest.raises(ValueError):
            _build(output=output)
    assert _build(output=_deep(MAX_JSON_DEPTH)).output == _deep(MAX_JSON_DEPTH)


def test_a_result_with_the_largest_output_still_fits_in_one_kafka_record():
    # Result itself allows 1 MiB of output; the worker less, so that the record with its
    # spans stays under the 1 MiB the broker and the producer take (a larger one would
    # fail its transaction on every try).
    with pytest.raises(ValueError):
        _build(output={"text": "x" * MAX_OUTPUT_BYTES})
    spans = [_span(f"hop.{i}", f"{i + 1:016x}") for i in range(64)]
    largest = _build(output={"text": "x" * (MAX_OUTPUT_BYTES - 20)}, spans=spans)
    record = record_for("t.results", _command(), largest, KIND_RESULT)
    assert 700 * 1024 < len(record.value) < 1_000_000


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=40,
)


def _reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    return 0


@given(_json, st.integers(min_value=0, max_value=8))
def test_depth_check_agrees_with_a_recursive_definition(value: Any, limit: int):
    assert json_depth_exceeds(value, limit) == (_reference_depth(value) > limit)


def test_depth_check_stops_early_on_hostile_nesting():
    value: Any = []
    for _ in range(200_000):
        value = [value]
    assert json_depth_exceeds(value, MAX_JSON_DEPTH)
    with pytest.raises(ValueError):
        check_json_bounds({"a": value})

