"""What PromQL in the chart (alert rules, the Grafana dashboard) may read: the series the
processes export, and the metric names and labels an expression uses."""

from __future__ import annotations

import re

from observe._support import make_result, make_routed_command
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import BreakerState, Metrics
from schemas import ErrorCode, ResultStatus

# Labels Prometheus adds to every scraped series, and the buckets' bound.
TARGET_LABELS = {"namespace", "job", "pod", "le"}


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, from a Metrics driven through every public event.

    That production code drives them is for the pool and router tests to show (e.g. the
    breaker gauge and the upstream calls in tests/workers/test_pool_retries.py).
    """
    metrics = Metrics("worker-slack")
    routed = make_routed_command("acme")
    metrics.command_accepted(routed)
    metrics.command_routed(routed)
    metrics.count_rejected("acme", "main", ErrorCode.RATE_LIMITED.value, 0.01)
    metrics.command_started(routed, routed.routed_at)
    metrics.command_retried(routed)
    metrics.effect_found(routed)
    metrics.command_stopped("acme")
    metrics.result(make_result("acme"))
    metrics.result(make_result("acme", status=ResultStatus.FAILED, code=ErrorCode.INTERNAL))
    metrics.result(make_result("acme", status=ResultStatus.DEAD_LETTERED, code=ErrorCode.RETRIES_EXHAUSTED))
    metrics.watch_breaker("acme", "slack", lambda: BreakerState.OPEN)
    metrics.watch_credential_waits("slack", lambda: 2)
    metrics.set_worker_slots("slack", 64)
    metrics.upstream_call("slack", "chat.postMessage", "ok", 0.2)
    metrics.set_lag("workers.slack", {"slack": 3})
    metrics.set_assigned("workers.slack", ["slack"], [("slack", 0)])
    metrics.tenant_log_dropped.inc()
    metrics.http_request("/v1/commands", "POST", 202, 0.01)
    metrics.edge_rate_limited("acme")
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    return exported


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(Switchyard metric name, label names it is matched on) for each selector in ``expr``."""
    return [
        (name, set(re.findall(r'(\w+)(?:=~|!~|!=|=)"', matchers)))
        for name, matchers in re.findall(r"\b(switchyard_\w+)\{([^}]*)\}", expr)
    ]


def grouping(expr: str) -> set[str]:
    """Label names in the expression's ``by (...)`` and ``on (...)`` clauses."""
    return {
        label.strip()
        for clause in re.findall(r"\b(?:by|on) \(([^)]*)\)", expr)
        for label in clause.split(",")
    }
