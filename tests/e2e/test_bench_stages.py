"""``switchyard bench`` splits a lone MCP call into hops by its Result's spans (bench._stages)."""

from __future__ import annotations

from typing import Any

import pytest

from bench._stages import stages_of

MS = 1_000_000  # ns


def _span(name: str, start_ms: float, end_ms: float) -> dict[str, Any]:
    return {"name": name, "start_unix_nano": int(start_ms * MS), "end_unix_nano": int(end_ms * MS)}


def test_a_call_is_split_into_its_hops_in_order() -> None:
    spans = [
        _span("worker.execute", 24, 27),
        _span("switchyard.commands publish", 2, 2.5),
        _span("upstream.slack.chat.postMessage", 24.2, 26.8),
        _span("POST", 24.3, 26.7),
        _span("router.route", 13, 13.5),
    ]
    stages = stages_of(0, 47 * MS, spans)
    assert stages is not None
    assert {k: round(v * 1000, 3) for k, v in stages.items()} == {
        "ingress": 2.5, "to_router": 10.5, "router": 0.5, "to_worker": 10.5,
        "worker": 3.0, "upstream": 2.6, "back": 20.0,
    }
    # The hops between the send and the answer add up to the whole call.
    assert sum(v for k, v in stages.items() if k != "upstream") == pytest.approx(0.047)


def test_a_call_without_a_hops_span_is_not_split() -> None:
    spans = [_span("a-prefix.commands publish", 2, 2.5), _span("worker.execute", 24, 27)]
    assert stages_of(0, 47 * MS, spans) is None
