"""``switchyard bench`` reads the product's targets off its own report (bench._targets)."""

from __future__ import annotations

import copy
from typing import Any

from bench._load import percentiles
from bench._targets import against_targets


def _calls(per_s: float, p99_ms: float, *, calls: int = 1000, errors: int = 0) -> dict[str, Any]:
    latency = {"count": calls, "p50_ms": p99_ms / 3, "p99_ms": p99_ms}
    return {"calls": calls, "errors": errors, "calls_per_s": per_s, "latency": latency, "latency_all_calls": latency}


def _report() -> dict[str, Any]:
    return {
        "async": {"ratio_to_baseline": 0.028},
        "sync_mcp": {"closed_loop": _calls(385.0, 279.0), "open_loop_500_per_s": _calls(493.0, 1100.0)},
        "noisy_neighbour": {
            "quiet_alone": _calls(20.0, 69.0, calls=300),
            "flood_20x": {"quiet": _calls(20.0, 96.0, calls=300), "noisy_all_finished": True},
            "p99_ratio": 1.39,
        },
    }


def test_a_run_reads_as_measured_against_each_target() -> None:
    targets = against_targets(_report())
    assert targets["async_ratio_to_baseline"] == {"measured": 0.028, "target": ">= 0.25", "met": False}
    assert targets["mcp_calls_per_s"]["measured"] == 385.0 and targets["mcp_calls_per_s"]["met"] is False
    assert targets["mcp_p99_ms_at_500_per_s"]["met"] is False
    assert targets["quiet_tenant_p99_ratio_beside_a_20x_flood"] == {
        "measured": 1.39, "target": "<= 1.5", "met": True
    }


def test_a_low_p99_at_500_per_s_counts_only_when_the_rate_was_served_without_failures() -> None:
    fast = _report()
    fast["sync_mcp"]["open_loop_500_per_s"] = _calls(499.0, 31.0)
    assert against_targets(fast)["mcp_p99_ms_at_500_per_s"]["met"] is True
    behind = copy.deepcopy(fast)
    behind["sync_mcp"]["open_loop_500_per_s"]["calls_per_s"] = 400.0
    assert against_targets(behind)["mcp_p99_ms_at_500_per_s"]["met"] is False
    failing = copy.deepcopy(fast)
    failing["sync_mcp"]["open_loop_500_per_s"]["errors"] = 50  # 5 % of calls failed fast
    assert against_targets(failing)["mcp_p99_ms_at_500_per_s"]["met"] is False


def test_the_p99_judged_includes_the_failed_calls() -> None:
    report = _report()
    offered = _calls(499.0, 31.0, errors=5)
    offered["latency_all_calls"] = {"count": 1005, "p99_ms": 30_000.0}  # five calls that waited out
    report["sync_mcp"]["open_loop_500_per_s"] = offered
    assert against_targets(report)["mcp_p99_ms_at_500_per_s"]["measured"] == 30_000.0


def test_the_noisy_target_needs_a_flood_that_finished_and_a_quiet_tenant_that_was_served() -> None:
    unfinished = _report()
    unfinished["noisy_neighbour"]["flood_20x"]["noisy_all_finished"] = False
    assert against_targets(unfinished)["quiet_tenant_p99_ratio_beside_a_20x_flood"]["met"] is False
    refused = _report()
    refused["noisy_neighbour"]["flood_20x"]["quiet"]["errors"] = 30
    assert against_targets(refused)["quiet_tenant_p99_ratio_beside_a_20x_flood"]["met"] is False


def test_targets_of_scenarios_not_run_say_so() -> None:
    targets = against_targets({"machine": {"cores": 2}})
    assert set(targets) == {
        "async_ratio_to_baseline", "mcp_calls_per_s", "mcp_p99_ms_at_500_per_s",
        "quiet_tenant_p99_ratio_beside_a_20x_flood", "memory_bounded_under_tenant_count",
    }
    assert all(target["met"] is None for target in targets.values())


def test_percentiles_are_nearest_rank() -> None:
    samples = [i / 1000 for i in range(1, 301)]  # 1 .. 300 ms
    assert percentiles(samples) == {"count": 300, "p50_ms": 150.0, "p95_ms": 285.0, "p99_ms": 297.0, "max_ms": 300.0}
    assert percentiles([0.005]) == {"count": 1, "p50_ms": 5.0, "p95_ms": 5.0, "p99_ms": 5.0, "max_ms": 5.0}
    assert percentiles([]) == {"count": 0}


def _memory_step(kib: dict[str, float], series: dict[str, int], *, arrived: bool = True) -> dict[str, Any]:
    return {"kib_per_new_tenant": kib, "metric_series": series, "all_results_arrived": arrived, "tenants": 21000}


def test_memory_is_bounded_only_if_no_product_process_grows_per_tenant_nor_adds_series() -> None:
    series = {"ingress": 6, "router": 4004, "worker-slack-1": 4271}
    flat = {"ingress": 0.4, "router": -0.2, "worker-slack-1": 1.1, "openbao": 40.0, "kafka node 1": 9.0}
    report = {"tenant_memory": {"steps": [_memory_step(flat, series), _memory_step(flat, series)]}}
    judged = against_targets(report)["memory_bounded_under_tenant_count"]
    # OpenBao and Kafka keep what they are given (tokens, records): not ours to bound.
    assert judged["met"] is True and "openbao" not in judged["measured"]["kib_per_new_tenant"]
    growing = {**flat, "worker-slack-1": 36.0}
    report["tenant_memory"]["steps"][-1] = _memory_step(growing, series)
    assert against_targets(report)["memory_bounded_under_tenant_count"]["met"] is False
    more_series = {**series, "router": 4010}
    report["tenant_memory"]["steps"][-1] = _memory_step(flat, more_series)
    assert against_targets(report)["memory_bounded_under_tenant_count"]["met"] is False
    report["tenant_memory"]["steps"][-1] = _memory_step(flat, series, arrived=False)
    assert against_targets(report)["memory_bounded_under_tenant_count"]["met"] is False
