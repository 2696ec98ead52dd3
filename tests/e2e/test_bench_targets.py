"""``switchyard bench`` reads the product's targets off its own report (bench._targets)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from bench._targets import against_targets

RESULTS = Path(__file__).resolve().parents[2] / "bench"


def _report(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def test_a_recorded_run_reads_as_measured_against_each_target() -> None:
    targets = against_targets(_report("results-2026-11-29.json"))
    assert set(targets) == {"async_ratio_to_baseline", "mcp_calls_per_s", "mcp_p99_ms_at_500_per_s"}
    assert targets["async_ratio_to_baseline"] == {"measured": 0.028, "target": ">= 0.25", "met": False}
    assert targets["mcp_calls_per_s"]["measured"] == 385.0 and not targets["mcp_calls_per_s"]["met"]
    assert targets["mcp_p99_ms_at_500_per_s"]["met"] is False

    noisy = against_targets(_report("results-2026-11-29b.json"))
    assert noisy == {
        "quiet_tenant_p99_ratio_beside_a_20x_flood": {"measured": 1.39, "target": "<= 1.5", "met": True}
    }


def test_a_low_p99_at_500_per_s_counts_only_when_the_rate_was_served() -> None:
    report = _report("results-2026-11-29.json")
    fast = copy.deepcopy(report)
    fast["sync_mcp"]["open_loop_500_per_s"].update(calls_per_s=499.0, latency={"p99_ms": 31.0})
    assert against_targets(fast)["mcp_p99_ms_at_500_per_s"]["met"] is True
    behind = copy.deepcopy(fast)
    behind["sync_mcp"]["open_loop_500_per_s"]["calls_per_s"] = 400.0
    assert against_targets(behind)["mcp_p99_ms_at_500_per_s"]["met"] is False


def test_targets_of_scenarios_not_run_are_left_out() -> None:
    assert against_targets({"machine": {"cores": 2}}) == {}
