"""Fixtures for the deployment tests: pinned helm and promtool, built from their Go modules when missing."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from _helm import KUBE_VERSION, Render, go_tool, run_helm, template_args


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of helm v3.22.0 (scripts/install-go-tool.sh).

    Skips only when Go is missing, since helm is built from its Go module.
    """
    if shutil.which("go") is None:
        pytest.skip("helm is built with `go install` and `go` is not on PATH")
    return go_tool("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of Prometheus' promtool 3.16.0 (scripts/install-go-tool.sh); skips only without Go."""
    if shutil.which("go") is None:
        pytest.skip("promtool is built with `go install` and `go` is not on PATH")
    return go_tool("promtool")


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render(*values_files, set=[...], api_versions=[...], kube_version=...)`` -> the
    manifests as dicts."""

    rendered: dict[tuple[str, ...], str] = {}

    def _render(
        *values: str,
        set: Sequence[str] = (),  # noqa: A002 - mirrors helm's flag
        api_versions: Sequence[str] = (),
        kube_version: str = KUBE_VERSION,
    ) -> list[dict[str, Any]]:
        args = tuple(template_args(*values, set=set, api_versions=api_versions, kube_version=kube_version))
        if args not in rendered:
            done = run_helm(helm, *args)
            assert done.returncode == 0, done.stderr
            rendered[args] = done.stdout
        # Parsed afresh each time, so a test may change what it gets.
        return [doc for doc in yaml.safe_load_all(rendered[args]) if doc]

    return _render
