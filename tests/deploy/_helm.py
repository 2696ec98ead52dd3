"""Helpers shared by the deployment tests: paths, and running pinned Go tools (helm, promtool)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "switchyard"
INSTALL_GO_TOOL = ROOT / "scripts" / "install-go-tool.sh"
# Render for the newest Kubernetes that kubernetes-validate ships schemas for.
KUBE_VERSION = "1.37.0"

Render = Callable[..., list[dict[str, Any]]]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def go_tool(name: str) -> str:
    """Path of a pinned Go tool from scripts/install-go-tool.sh (a no-op once it is built)."""
    done = subprocess.run(
        ["bash", str(INSTALL_GO_TOOL), name], capture_output=True, text=True, timeout=1500, check=False
    )
    assert done.returncode == 0, f"scripts/install-go-tool.sh {name} failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


def template_args(
    *values: str,
    set: Sequence[str] = (),  # noqa: A002
    api_versions: Sequence[str] = (),
    kube_version: str = KUBE_VERSION,
) -> list[str]:
    """``helm template`` arguments for the chart with ci/ values files and --set items."""
    args = ["template", "sy", str(CHART), "--namespace", "switchyard", "--kube-version", kube_version]
    for name in values:
        args += ["-f", str(CHART / "ci" / name)]
    for item in set:
        args += ["--set", item]
    for api in api_versions:
        args += ["--api-versions", api]
    return args
