"""`switchyard run`'s own decisions, with the system stubbed (no Kafka, no OpenBao):
which demo tenants it sends for, where it caches Kafka, what a Ctrl-C during the demo
returns. The real run is tests/e2e/test_run_once.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from switchyard import run as run_module
from switchyard.stack import _local
from switchyard.stack._errors import StackError
from switchyard.system import LocalSystem


def _stub_system(monkeypatch: pytest.MonkeyPatch, demo: Callable[[list[Any]], Awaitable[bool]]) -> None:
    async def start(self: LocalSystem, stop: Any = None) -> None:
        self.ingress_url, self.emulator_url = "http://127.0.0.1:1", "http://127.0.0.1:2"

    async def provision(self: LocalSystem, tenants: list[Any], **_: Any) -> dict[str, str]:
        return {t.tenant_id: "sy_key" for t in tenants}

    async def fake_demo(url: str, keys: dict[str, str], tenants: list[Any]) -> bool:
        return await demo(tenants)

    monkeypatch.setattr(LocalSystem, "start", start)
    monkeypatch.setattr(LocalSystem, "provision", provision)
    monkeypatch.setattr(LocalSystem, "stop", lambda self: None)
    monkeypatch.setattr(run_module, "_demo", fake_demo)


def _args(tmp_path: Path, *, once: bool, connectors: str) -> argparse.Namespace:
    return argparse.Namespace(once=once, port=0, state_dir=tmp_path / "run", connectors=connectors)


def test_the_demo_sends_only_for_the_connectors_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With --connectors slack,gmail the Notion and Jira tenants' calls waited 30 s each
    # for pools that never started, and --once exited 1.
    sent: list[str] = []

    async def demo(tenants: list[Any]) -> bool:
        sent.extend(t.connector for t in tenants)
        return True

    _stub_system(monkeypatch, demo)
    assert run_module.run(_args(tmp_path, once=True, connectors="slack,gmail")) == 0
    assert sorted(sent) == ["gmail", "slack"]


def test_ctrl_c_during_the_demo_stops_with_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def demo(tenants: list[Any]) -> bool:
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C mid-demo
        await asyncio.sleep(0.1)
        return True

    _stub_system(monkeypatch, demo)
    assert run_module.run(_args(tmp_path, once=False, connectors="slack")) == 130


def test_switchyard_home_decides_where_the_run_caches_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SWITCHYARD_HOME", str(home))
    seen: dict[str, Path] = {}

    def up(self: _local.LocalStack) -> None:
        seen["home"] = self.home
        raise StackError("stopped here")

    monkeypatch.setattr(_local.LocalStack, "up", up)
    with pytest.raises(StackError):
        asyncio.run(LocalSystem(tmp_path / "run", port=0).start())
    assert seen["home"] == home
