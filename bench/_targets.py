"""The product's performance targets, read off one bench report: measured, target, met.

A target whose scenario did not run says so (``met`` null). A latency or rate target
counts as met only with at most 1 % of calls failed, and its p99 includes the failed
ones; the 500/s latency target also needs the pipeline to have served the offered rate:
a p99 of calls it could not keep up with says nothing about the target.
"""

from __future__ import annotations

from typing import Any

__all__ = ["against_targets"]

ASYNC_RATIO = 0.25
MCP_CALLS_PER_S = 2_000.0
P99_MS_AT_500 = 50.0
SERVED_SHARE = 0.95
NOISY_RATIO = 1.5
MAX_ERROR_SHARE = 0.01
_NOT_MEASURED = {"met": None, "reason": "not measured in this run"}


def against_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{target name: {"measured", "target", "met"}}`` for every target."""
    out: dict[str, dict[str, Any]] = {}
    ratio = report.get("async", {}).get("ratio_to_baseline")
    out["async_ratio_to_baseline"] = _NOT_MEASURED if ratio is None else _at_least(ratio, ASYNC_RATIO)
    mcp = report.get("sync_mcp")
    if mcp is None:
        out["mcp_calls_per_s"] = out["mcp_p99_ms_at_500_per_s"] = _NOT_MEASURED
    else:
        closed = mcp["closed_loop"]
        rate, errors = _at_least(closed["calls_per_s"], MCP_CALLS_PER_S), _errors(closed)
        out["mcp_calls_per_s"] = {**rate, "error_share": errors["error_share"], "met": rate["met"] and errors["met"]}
        offered = mcp["open_loop_500_per_s"]
        p99 = offered["latency_all_calls"].get("p99_ms")
        served = offered["calls_per_s"]
        errors = _errors(offered)
        out["mcp_p99_ms_at_500_per_s"] = {
            "measured": p99,
            "served_per_s": served,
            "target": f"< {P99_MS_AT_500:g} ms, serving {SERVED_SHARE:.0%} of 500/s",
            "met": p99 is not None and p99 < P99_MS_AT_500 and served >= SERVED_SHARE * 500 and errors["met"],
            "error_share": errors["error_share"],
        }
    noisy = report.get("noisy_neighbour")
    if noisy is None or noisy.get("p99_ratio") is None:
        out["quiet_tenant_p99_ratio_beside_a_20x_flood"] = _NOT_MEASURED
    else:
        quiet = [noisy["quiet_alone"], noisy["flood_20x"]["quiet"]]
        errors_ok = all(_errors(phase)["met"] for phase in quiet)
        out["quiet_tenant_p99_ratio_beside_a_20x_flood"] = {
            "measured": noisy["p99_ratio"], "target": f"<= {NOISY_RATIO}",
            "met": noisy["p99_ratio"] <= NOISY_RATIO and errors_ok and noisy["flood_20x"]["noisy_all_finished"],
        }
    return out


def _errors(calls: dict[str, Any]) -> dict[str, Any]:
    """The share of ``calls``' attempts that failed, and whether it is within the bound."""
    attempts = calls["calls"] + calls["errors"]
    share = calls["errors"] / attempts if attempts else 1.0
    return {"error_share": round(share, 4), "met": share <= MAX_ERROR_SHARE}


def _at_least(measured: float, target: float) -> dict[str, Any]:
    return {"measured": measured, "target": f">= {target:g}", "met": measured >= target}
