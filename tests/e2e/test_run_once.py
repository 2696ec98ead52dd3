"""The main job, as the README's first command runs it: ``switchyard run --once`` starts
its own Kafka and OpenBao, the emulators, ingress, router and a pool per connector, runs
the demo through MCP, writes the client configurations and stops every process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEMO = {"acme": "slack", "beta": "gmail", "gamma": "notion", "delta": "jira"}


def _marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (every child inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _environment(marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "VAULT_"))}
    env["SY_RUN_TEST"] = marker.partition("=")[2]
    if "SWITCHYARD_HOME" in os.environ:  # the Kafka jars the session already fetched
        env["SWITCHYARD_HOME"] = os.environ["SWITCHYARD_HOME"]
    return env


def _keys(path: Path) -> dict[str, str]:
    """The API key of each remote entry of a client configuration file."""
    servers = json.loads(path.read_text())["mcpServers"]
    return {name: entry["headers"]["Authorization"] for name, entry in servers.items() if "headers" in entry}


def _finish(run: subprocess.Popen[str], marker: str, within: float) -> str:
    """``run``'s output once it exits (bounded). If it does not, SIGINT (its own stop path),
    then whatever still carries ``marker`` is killed: a failed test leaves nothing running."""
    try:
        out, _ = run.communicate(timeout=within)
        return out
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            try:
                run.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                run.kill()
        for pid in _marked(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(420)
def test_run_once_demos_each_tenant_writes_client_configs_and_leaves_no_process(tmp_path: Path) -> None:
    marker = f"SY_RUN_TEST={uuid.uuid4().hex}"
    state = tmp_path / "run"
    run = subprocess.Popen(
        [sys.executable, "-m", "switchyard.cli", "run", "--once", "--port", "0", "--state-dir", str(state),
         "--connectors", ",".join(DEMO.values())],
        cwd=REPO, env=_environment(marker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    out = _finish(run, marker, within=300)
    assert run.returncode == 0, out[-3000:]
    for tenant, connector in DEMO.items():
        assert f"[ok ] tenant {tenant:6} → {connector}." in out, out[-3000:]
    assert "no process left behind" in out
    assert _marked(marker) == []

    path = state / "mcp-clients.json"
    assert f"{path}" in out
    # Where the admin API's token is, for the calls the README shows; not the token itself.
    # (The stack's files are gone once it stopped.)
    assert f"SWITCHYARD_ADMIN_TOKEN in {state / 'stack' / 'stack.env'}" in out
    assert "SWITCHYARD_ADMIN_TOKEN=" not in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    servers = json.loads(path.read_text())["mcpServers"]
    assert set(servers) == {name for t in DEMO for name in (f"switchyard-{t}", f"switchyard-{t}-stdio")}
    for tenant in DEMO:
        remote, stdio = servers[f"switchyard-{tenant}"], servers[f"switchyard-{tenant}-stdio"]
        assert remote["url"].endswith("/mcp/main") and remote["headers"]["Authorization"].startswith("Bearer sy_")
        assert stdio["command"] == "npx" and remote["url"] in stdio["args"]
        assert stdio["env"]["SWITCHYARD_AUTH"] == remote["headers"]["Authorization"]
    # The keys are in that file only: not on the terminal.
    keys = [servers[f"switchyard-{t}"]["headers"]["Authorization"].removeprefix("Bearer ") for t in DEMO]
    printed = any(key in out for key in keys)
    assert not printed, "an API key was printed"


@pytest.mark.timeout(420)
def test_ctrl_c_while_starting_stops_everything_started_so_far(tmp_path: Path) -> None:
    marker = f"SY_RUN_TEST={uuid.uuid4().hex}"
    run = subprocess.Popen(
        [sys.executable, "-m", "switchyard.cli", "run", "--port", "0", "--state-dir", str(tmp_path / "run"),
         "--connectors", "slack"],
        cwd=REPO, env=_environment(marker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert run.stdout is not None
    seen = []
    for line in run.stdout:  # bounded: the process ends, and pytest-timeout guards the rest
        seen.append(line)
        if "starting API emulators" in line:  # mid-start: the stack is up, children starting
            run.send_signal(signal.SIGINT)
            break
    out = "".join(seen) + _finish(run, marker, within=120)
    assert run.returncode == 130, out[-2000:]
    assert "no process left behind" in out
    assert _marked(marker) == []


@pytest.mark.timeout(420)
def test_a_run_after_one_killed_outright_stops_what_that_one_left_running(tmp_path: Path) -> None:
    state = tmp_path / "run"
    argv = [sys.executable, "-m", "switchyard.cli", "run", "--port", "0", "--state-dir", str(state),
            "--connectors", ",".join(DEMO.values())]  # fmt: skip
    killed_marker = f"SY_RUN_TEST={uuid.uuid4().hex}"
    killed = subprocess.Popen(argv, cwd=REPO, env=_environment(killed_marker), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert killed.stdout is not None
        for line in killed.stdout:  # bounded: pytest-timeout
            if "serving. Press Ctrl-C" in line:
                break
        first_keys = _keys(state / "mcp-clients.json")
        assert len(first_keys) == len(DEMO)
        killed.kill()  # SIGKILL: no stop path runs; the children and the stack live on
        killed.wait(timeout=30)
        killed.stdout.close()
        assert _marked(killed_marker), "nothing was left running to reap"

        marker = f"SY_RUN_TEST={uuid.uuid4().hex}"
        again = subprocess.Popen([*argv, "--once"], cwd=REPO, env=_environment(marker), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)  # fmt: skip
        out = _finish(again, marker, within=300)
        assert again.returncode == 0, out[-3000:]
        assert "left running by a run that was killed" in out and "stopped a stack left running" in out, out[-3000:]
        assert _marked(killed_marker) == []
        # The keys pasted from the first run work for the second: it published them again.
        same = _keys(state / "mcp-clients.json") == first_keys
        assert same, "the second run's client configurations hold other keys"
    finally:
        for pid in _marked(killed_marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
