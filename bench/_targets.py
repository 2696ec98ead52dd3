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
# Over the last tenant_memory step (past the workers' 10,000-entry caches), what a product
# process may grow per new tenant: its copies of the tenant's data and a duplicate-check
# entry, not an uncapped cache.
MEMORY_KIB_PER_TENANT = 2.0
_PRODUCT_PROCESSES = ("ingress", "router", "worker-")
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
    out["memory_bounded_under_tenant_count"] = _memory(report.get("tenant_memory"))
    return out


def _memory(memory: dict[str, Any] | None) -> dict[str, Any]:
    """Growth per new tenant and metric series over the last step, for the product's processes."""
    if not memory or len(memory.get("steps", [])) < 2:
        return _NOT_MEASURED
    previous, last = memory["steps"][-2], memory["steps"][-1]
    ours = [name for name in last["kib_per_new_tenant"] if name.startswith(_PRODUCT_PROCESSES)]
    growth = {name: last["kib_per_new_tenant"][name] for name in ours}
    new_series = {
        name: last["metric_series"][name] - previous["metric_series"].get(name, 0)
        for name in last["metric_series"] if name.startswith(_PRODUCT_PROCESSES)
    }  # fmt: skip
    return {
        "measured": {"kib_per_new_tenant": growth, "new_metric_series": new_series, "tenants": last["tenants"]},
        "target": f"<= {MEMORY_KIB_PER_TENANT:g} KiB per new tenant and no new metric series over the last step",
        "met": bool(growth)
        and max(growth.values()) <= MEMORY_KIB_PER_TENANT
        and all(n <= 0 for n in new_series.values())
        and last["all_results_arrived"],
    }


def _errors(calls: dict[str, Any]) -> dict[str, Any]:
    """The share of ``calls``' attempts that failed, and whether it is within the bound."""
    attempts = calls["calls"] + calls["errors"]
    share = calls["errors"] / attempts if attempts else 1.0
    return {"error_share": round(share, 4), "met": share <= MAX_ERROR_SHARE}


def _at_least(measured: float, target: float) -> dict[str, Any]:
    return {"measured": measured, "target": f">= {target:g}", "met": measured >= target}
