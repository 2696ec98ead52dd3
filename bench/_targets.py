"""The product's performance targets, read off one bench report: measured, target, met.

A target whose scenario did not run is left out. The 500/s latency target counts as met
only when the pipeline also served the offered rate: a p99 of calls it could not keep
up with says nothing about the target.
"""

from __future__ import annotations

from typing import Any

__all__ = ["against_targets"]

ASYNC_RATIO = 0.25
MCP_CALLS_PER_S = 2_000.0
P99_MS_AT_500 = 50.0
SERVED_SHARE = 0.95
NOISY_RATIO = 1.5


def against_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{target name: {"measured", "target", "met"}}`` for each target ``report`` measured."""
    out: dict[str, dict[str, Any]] = {}
    ratio = report.get("async", {}).get("ratio_to_baseline")
    if ratio is not None:
        out["async_ratio_to_baseline"] = _at_least(ratio, ASYNC_RATIO)
    mcp = report.get("sync_mcp")
    if mcp is not None:
        out["mcp_calls_per_s"] = _at_least(mcp["closed_loop"]["calls_per_s"], MCP_CALLS_PER_S)
        offered = mcp["open_loop_500_per_s"]
        p99 = offered["latency"].get("p99_ms")
        served = offered["calls_per_s"]
        out["mcp_p99_ms_at_500_per_s"] = {
            "measured": p99,
            "served_per_s": served,
            "target": f"< {P99_MS_AT_500:g} ms, serving {SERVED_SHARE:.0%} of 500/s",
            "met": p99 is not None and p99 < P99_MS_AT_500 and served >= SERVED_SHARE * 500,
        }
    noisy = report.get("noisy_neighbour", {}).get("p99_ratio")
    if noisy is not None:
        out["quiet_tenant_p99_ratio_beside_a_20x_flood"] = {
            "measured": noisy, "target": f"<= {NOISY_RATIO}", "met": noisy <= NOISY_RATIO,
        }
    return out


def _at_least(measured: float, target: float) -> dict[str, Any]:
    return {"measured": measured, "target": f">= {target:g}", "met": measured >= target}
