"""Fixtures for the deployment tests: a pinned helm, built from its Go module when missing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from _helm import INSTALL_HELM, Render, run_helm, template_args


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of helm v3.22.0 from scripts/install-helm.sh (a no-op once it is built).

    Skips only when Go is missing, since helm is built from its Go module.
    """
    if shutil.which("go") is None:
        pytest.skip("helm is built with `go install` and `go` is not on PATH")
    done = subprocess.run(
        ["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=1500, check=False
    )
    assert done.returncode == 0, f"scripts/install-helm.sh failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render(*values_files, set=[...], api_versions=[...])`` -> the manifests as dicts."""

    rendered: dict[tuple[str, ...], str] = {}

    def _render(
        *values: str,
        set: Sequence[str] = (),  # noqa: A002 - mirrors helm's flag
        api_versions: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        args = tuple(template_args(*values, set=set, api_versions=api_versions))
        if args not in rendered:
            done = run_helm(helm, *args)
            assert done.returncode == 0, done.stderr
            rendered[args] = done.stdout
        # Parsed afresh each time, so a test may change what it gets.
        return [doc for doc in yaml.safe_load_all(rendered[args]) if doc]

    return _render
