"""The chart's Grafana dashboard (dashboards/switchyard.json, shipped as a ConfigMap).

Every query is PromQL that promtool accepts once Grafana's variables are filled in, reads
only series and labels the processes export, and names in its legend only labels it
keeps; the panels do not overlap.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helm import CHART, Render
from _promql import TARGET_LABELS, exported_series, grouping, selectors

pytestmark = pytest.mark.timeout(1500)

DASHBOARD = CHART / "dashboards" / "switchyard.json"
# What Grafana puts in place of the dashboard's variables, for checking the queries.
VARIABLES = {
    "$__rate_interval": "2m",
    "$namespace": "switchyard",
    "$release": "sy-switchyard",
    "$tenant": ".*",
    "$connector": ".*",
}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _queries() -> list[tuple[str, str, str]]:
    """(panel title, PromQL with variables filled in, legend format) of every panel target."""
    out = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((panel["title"], expr, target.get("legendFormat", "")))
    return out


def _variable_queries() -> list[str]:
    """The series selectors inside the template variables' ``label_values(...)``."""
    found = []
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        selector = match[1]
        for name, value in VARIABLES.items():
            selector = selector.replace(name, value)
        found.append(f"count by ({match[2]}) ({selector})")
    return found


def test_the_configmap_carries_the_dashboard_only_when_enabled(render: Render) -> None:
    def maps(**kwargs: Any) -> list[dict[str, Any]]:
        docs = render("minimal-values.yaml", **kwargs)
        return [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]

    assert maps() == []
    [config_map] = maps(set=["metrics.grafanaDashboard.enabled=true"])
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["switchyard.json"]) == _dashboard()
    [large] = [d for d in render("large-values.yaml") if d["kind"] == "ConfigMap" and "switchyard.json" in d.get("data", {})]
    assert large["metadata"]["annotations"] == {"grafana_folder": "Switchyard"}


def test_promtool_accepts_every_query(promtool: str, tmp_path: Path) -> None:
    exprs = [expr for _, expr, _ in _queries()] + _variable_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"switchyard:dashboard_query_{i}", "expr": expr} for i, expr in enumerate(exprs)
    ]}]}
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    done = subprocess.run(
        [promtool, "check", "rules", "queries.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout


def test_every_query_reads_exported_series_and_its_legend_names_kept_labels() -> None:
    exported = exported_series()
    for title, expr, legend in _queries():
        used = selectors(expr)
        assert used, (title, expr)
        for name, matched in used:
            assert name in exported, (title, name)
            assert matched <= exported[name] | TARGET_LABELS, (title, name, matched)
        kept = grouping(expr)
        offered = TARGET_LABELS | set().union(*(exported[n] for n, _ in used))
        assert kept <= offered, (title, kept - offered)
        # A legend can only name labels the aggregation keeps.
        assert set(re.findall(r"\{\{(\w+)\}\}", legend)) <= kept, (title, legend)


def test_panels_have_unique_ids_use_the_datasource_variable_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
