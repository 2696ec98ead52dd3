"""Helpers shared by the deployment tests: paths, and running a pinned helm."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "switchyard"
INSTALL_HELM = ROOT / "scripts" / "install-helm.sh"
# Render for the newest Kubernetes that kubernetes-validate ships schemas for.
KUBE_VERSION = "1.37.0"

Render = Callable[..., list[dict[str, Any]]]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def template_args(
    *values: str, set: Sequence[str] = (), api_versions: Sequence[str] = ()  # noqa: A002
) -> list[str]:
    """``helm template`` arguments for the chart with ci/ values files and --set items."""
    args = ["template", "sy", str(CHART), "--namespace", "switchyard", "--kube-version", KUBE_VERSION]
    for name in values:
        args += ["-f", str(CHART / "ci" / name)]
    for item in set:
        args += ["--set", item]
    for api in api_versions:
        args += ["--api-versions", api]
    return args
