"""The tracer behind ``core.telemetry``: spans, their context, capture into SpanRecords."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from core import telemetry
from core._light_trace import LightTracerProvider
from core.telemetry import capture_spans, current_trace_id, extract, inject, span, tracer


def test_without_an_otlp_endpoint_the_light_tracer_is_the_process_provider() -> None:
    tracer()
    assert isinstance(trace.get_tracer_provider(), LightTracerProvider)


def test_a_child_span_continues_its_parents_trace_and_both_are_captured_child_first() -> None:
    with capture_spans() as spans:
        with span("outer", kind=SpanKind.SERVER, attributes={"a": 1}) as outer:
            trace_id = current_trace_id()
            with span("inner") as inner:
                inner.set_attribute("b", "two")
    child, parent = spans
    assert [child.name, parent.name] == ["inner", "outer"]
    assert child.trace_id == parent.trace_id == trace_id
    assert child.parent_span_id == parent.span_id == f"{outer.get_span_context().span_id:016x}"
    assert parent.parent_span_id is None
    assert (parent.kind, child.kind) == ("server", "internal")
    assert (parent.attributes, child.attributes) == ({"a": 1}, {"b": "two"})
    assert 0 < parent.start_unix_nano <= child.start_unix_nano <= child.end_unix_nano <= parent.end_unix_nano


def test_trace_context_survives_kafka_headers_into_another_hop() -> None:
    headers: list[tuple[str, bytes]] = []
    with span("ingress.submit") as first:
        inject(headers)
    assert [key for key, _ in headers] == ["traceparent"]
    with capture_spans() as spans, span("router.route", context=extract(headers)):
        pass
    first_context = first.get_span_context()
    assert spans[0].trace_id == f"{first_context.trace_id:032x}"
    assert spans[0].parent_span_id == f"{first_context.span_id:016x}"


def test_an_exception_marks_the_span_failed_with_its_type_only_and_propagates() -> None:
    with capture_spans() as spans, pytest.raises(ValueError, match="token"):
        with span("fails"):
            raise ValueError("token xoxb-should-not-travel")
    assert spans[0].status == "error"
    assert spans[0].attributes == {"exception.type": "ValueError"}
    assert "xoxb" not in spans[0].model_dump_json()


def test_an_exception_leaves_the_span_alone_when_the_caller_records_outcomes_itself() -> None:
    with capture_spans() as spans, pytest.raises(KeyError):
        with tracer().start_as_current_span(
            "quiet", record_exception=False, set_status_on_exception=False
        ):
            raise KeyError("x")
    assert (spans[0].status, spans[0].attributes) == ("unset", {})


def test_status_ok_is_final_and_an_error_status_sticks() -> None:
    with capture_spans() as spans:
        with span("ok") as ok:
            ok.set_status(StatusCode.OK)
            ok.set_status(Status(StatusCode.ERROR, "later"))
        with span("err") as err:
            err.set_status(Status(StatusCode.ERROR, "boom"))
            err.set_status(StatusCode.UNSET)
    assert [record.status for record in spans] == ["ok", "error"]


def test_attributes_are_bounded_in_number_type_and_length() -> None:
    with capture_spans() as spans, span("many") as current:
        for n in range(100):
            current.set_attribute(f"k{n}", n)
        current.set_attribute("k0", "x" * 5000)
        current.set_attribute("list", [1, 2])
    attributes = spans[0].attributes
    assert len(attributes) == 32
    assert attributes["k0"] == "x" * 1000
    assert "list" not in attributes and "k40" not in attributes


def test_only_spans_ending_inside_a_capture_block_are_kept_and_at_most_64() -> None:
    with span("outside"):
        pass
    with capture_spans() as spans:
        for n in range(100):
            with span(f"s{n}"):
                pass
    assert len(spans) == telemetry.MAX_CAPTURED == 64
    assert spans[0].name == "s0"


def test_an_sdk_span_and_a_light_span_give_records_of_the_same_shape() -> None:
    sdk = TracerProvider()
    sdk.add_span_processor(telemetry._CaptureProcessor())
    with capture_spans() as spans:
        with sdk.get_tracer("t").start_as_current_span("sdk", attributes={"a": "b"}):
            pass
        with span("light", attributes={"a": "b"}):
            pass
    sdk_record, light_record = (record.model_dump() for record in spans)
    assert sdk_record.keys() == light_record.keys()
    for record in (sdk_record, light_record):
        assert (record["kind"], record["status"], record["attributes"]) == ("internal", "unset", {"a": "b"})
        assert len(record["trace_id"]) == 32 and len(record["span_id"]) == 16
