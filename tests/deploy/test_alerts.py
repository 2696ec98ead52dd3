"""The chart's alert rules (templates/prometheusrule.yaml).

promtool, Prometheus' own checker, accepts the rendered rule groups and runs their unit
tests (alerts_test.yaml: each alert fires in its bad case and not in a healthy one next
to it); and every metric and label the rules read is one the processes really export.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helm import Render
from _promql import TARGET_LABELS, exported_series, grouping, selectors

# The first test to ask for helm or promtool may build it (minutes on 2 cores).
pytestmark = pytest.mark.timeout(1500)

HERE = Path(__file__).parent
RULE_API = ["monitoring.coreos.com/v1"]


def _rule(render: Render, *values: str, set: tuple[str, ...] = ()) -> dict[str, Any]:  # noqa: A002
    [rule] = [
        d for d in render(*values, set=set, api_versions=RULE_API) if d["kind"] == "PrometheusRule"
    ]
    return rule


def _alerts(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _promtool(promtool: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules_and_their_unit_tests_pass(
    render: Render, promtool: str, tmp_path: Path
) -> None:
    rule = _rule(render, "minimal-values.yaml")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)

    checked = _promtool(promtool, tmp_path, "check", "rules", "rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool(promtool, tmp_path, "test", "rules", "alerts_test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr

    # Every alert has a case in the unit tests.
    cases = set(re.findall(r"alertname: (\w+)", (HERE / "alerts_test.yaml").read_text()))
    assert cases == {a["alert"] for a in _alerts(rule)}


def test_promtool_fails_the_unit_tests_when_an_alert_changes(
    render: Render, promtool: str, tmp_path: Path
) -> None:
    """The unit tests can fail: a threshold the bad case no longer crosses breaks them."""
    rule = _rule(render, "minimal-values.yaml", set=("metrics.prometheusRule.lagRecords=20000",))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)

    tested = _promtool(promtool, tmp_path, "test", "rules", "alerts_test.yaml")
    assert tested.returncode != 0
    assert "SwitchyardConsumerLagHigh" in tested.stdout + tested.stderr


def test_thresholds_and_labels_come_from_the_values(render: Render) -> None:
    rule = _rule(render, "large-values.yaml")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [lag] = [a for a in _alerts(rule) if a["alert"] == "SwitchyardConsumerLagHigh"]
    assert lag["expr"].endswith("> 50000")
    assert 'namespace="switchyard"' in lag["expr"]


def test_rules_only_when_the_prometheus_operator_api_is_served(render: Render) -> None:
    def rules(**kwargs: Any) -> list[dict[str, Any]]:
        return [d for d in render("minimal-values.yaml", **kwargs) if d["kind"] == "PrometheusRule"]

    assert rules() == []
    assert len(rules(api_versions=RULE_API)) == 1
    assert rules(api_versions=RULE_API, set=["metrics.prometheusRule.enabled=false"]) == []
    assert len(rules(set=["metrics.prometheusRule.enabled=true"])) == 1


def test_every_metric_and_label_the_rules_read_is_exported(render: Render) -> None:
    exported = exported_series()
    for alert in _alerts(_rule(render, "minimal-values.yaml")):
        used = selectors(alert["expr"])
        for name, matched in used:
            assert name in exported, (alert["alert"], name, sorted(exported))
            assert matched <= exported[name] | TARGET_LABELS, (alert["alert"], name, matched)
        # A grouping label is on the metrics grouped (every one here groups them all).
        offered = TARGET_LABELS | set().union(*(exported.get(n, set()) for n, _ in used))
        assert grouping(alert["expr"]) <= offered, (alert["alert"], grouping(alert["expr"]))
