"""``LocalStack`` and ``switchyard stack``: real servers up, nothing left after down,
and one clear line when something is missing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from core.vault import AppRoleCredentials, PoolVault, VaultAdmin
from switchyard.stack import LocalStack, StackError
from switchyard.stack._kafka import cluster_brokers
from switchyard.stack._procs import _LISTEN_FLOOR, free_port, free_ports
from switchyard.stack._vault import vault_healthy

REPO = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


async def _pool_reads_fresh_credentials(env: dict[str, str]) -> None:
    admin = VaultAdmin(env["VAULT_ADDR"], env["VAULT_TOKEN"])
    approle = AppRoleCredentials(
        env["SWITCHYARD_VAULT_ROLE_ID_SLACK"], env["SWITCHYARD_VAULT_SECRET_ID_SLACK"]
    )
    pool = PoolVault(env["VAULT_ADDR"], "slack", approle)
    try:
        await admin.put_credentials("acme", "slack", {"bot_token": "after-restart"})
        assert dict((await pool.read("acme")).data) == {"bot_token": "after-restart"}
    finally:
        pool.close()
        admin.close()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_local_stack_up_status_down_runs_real_servers_and_leaves_no_process_behind(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "stack"
    stack = LocalStack(state_dir, brokers=1)
    try:
        env = await asyncio.to_thread(stack.up)
        status = stack.status()
        assert status["running"] and all(p["alive"] for p in status["processes"])
        assert [p["name"] for p in status["processes"]] == ["kafka node 1", "openbao"]
        assert await cluster_brokers(env["SWITCHYARD_KAFKA_BOOTSTRAP"]) == {1}
        assert vault_healthy(env["VAULT_ADDR"])
        assert {"VAULT_TOKEN", "SWITCHYARD_ADMIN_TOKEN", "SWITCHYARD_VAULT_SECRET_ID_SLACK"} <= set(
            env
        )
        same = stack.env == env
        assert same, "stack.env differs from what up() returned"
        assert stat.S_IMODE((state_dir / "stack.env").stat().st_mode) == 0o600
        # Checked as booleans: pytest would print both sides of a failed comparison, secret included.
        leaked = env["VAULT_TOKEN"] in (state_dir / "stack.json").read_text()
        assert not leaked, "the root token is in stack.json"
        with pytest.raises(StackError, match="already runs"):
            LocalStack(state_dir).up()
        assert stack.dead() == []

        # OpenBao killed under it: the stack says so (switchyard run then stops, saying why).
        vault_pid = next(p["pid"] for p in status["processes"] if p["name"] == "openbao")
        os.kill(vault_pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            while stack.dead() != ["openbao"]:  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.05)

        # A dev OpenBao forgets everything on restart; the helper re-bootstraps the pools
        # with the AppRole ids they already hold, so running workers log in again.
        restarted = await asyncio.to_thread(stack.restart_vault)
        kept = [name for name in ("VAULT_TOKEN", "SWITCHYARD_VAULT_ROLE_ID_SLACK", "SWITCHYARD_VAULT_SECRET_ID_SLACK")
                if restarted[name] == env[name]]
        assert len(kept) == 3, f"changed by the restart: {sorted(set(env) & set(restarted) - set(kept))[:3]}"
        same = stack.env == restarted
        assert same, "stack.env differs from what the restart returned"
        await _pool_reads_fresh_credentials(restarted)
        status = stack.status()  # OpenBao has a new pid now
        assert _processes_mentioning(str(state_dir)), "the JVM's command line names the state dir"
    finally:
        # As the CLI does: from stack.json alone, not the object that started it.
        stopped = await asyncio.to_thread(LocalStack(state_dir).down)
    assert sorted(stopped) == sorted(f"{p['name']} (pid {p['pid']})" for p in status["processes"])
    assert _processes_mentioning(str(state_dir)) == []
    assert [p["pid"] for p in status["processes"] if _running(p["pid"])] == []
    assert not LocalStack(state_dir).status()["running"]
    stack.down()  # the starting object agrees: nothing left to stop (and reaps its children)


def _cli(args: list[str], *, path: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "SWITCHYARD_HOME": str(home), "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "stack", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    *progress, error = result.stderr.strip().splitlines()
    assert error.startswith("switchyard stack: "), result.stderr
    assert all(line.endswith("…") for line in progress), result.stderr  # only progress before it
    return error


def test_stack_up_without_java_says_so_in_one_line_and_starts_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _cli(["up", "--state-dir", str(tmp_path / "s")], path=str(empty), home=tmp_path)
    assert "Java 17+ not found on PATH" in _one_error_line(result)
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "s" / "stack.json").exists()


def test_stack_up_with_java_11_says_java_17_is_needed(tmp_path: Path) -> None:
    _fake_tool(tmp_path / "bin", "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2")
    result = _cli(
        ["up", "--state-dir", str(tmp_path / "s")], path=str(tmp_path / "bin"), home=tmp_path
    )
    assert "is Java 11; Kafka needs Java 17+" in _one_error_line(result)


def test_stack_up_without_maven_and_no_jar_cache_says_maven_is_missing(tmp_path: Path) -> None:
    _fake_tool(tmp_path / "bin", "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    result = _cli(
        ["up", "--state-dir", str(tmp_path / "s")], path=str(tmp_path / "bin"), home=tmp_path
    )
    assert "Maven (mvn) not found on PATH" in _one_error_line(result)
    assert result.stderr.count("\n") == 1


def test_stack_up_reports_a_failed_maven_download_in_one_line(tmp_path: Path) -> None:
    _fake_tool(tmp_path / "bin", "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    _fake_tool(
        tmp_path / "bin",
        "mvn",
        "echo '[ERROR] Could not transfer artifact kafka_2.13 from central'; exit 1",
    )
    result = _cli(
        ["up", "--state-dir", str(tmp_path / "s")], path=str(tmp_path / "bin"), home=tmp_path
    )
    line = _one_error_line(result)
    assert "mvn could not download the Kafka" in line and "Could not transfer artifact" in line
    assert not list((tmp_path / "kafka").glob("*/lib*")), "a failed download leaves no half cache"


def test_stack_up_on_a_taken_port_names_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(
            ["up", "--state-dir", str(tmp_path / "s"), "--vault-port", str(port)],
            path=os.defpath + ":" + str(Path(sys.executable).parent),
            home=tmp_path,
        )
    assert f"port {port} on 127.0.0.1 for OpenBao is taken" in _one_error_line(result)


def test_packaged_kafka_pom_is_a_copy_of_deploy_pom() -> None:
    packaged = REPO / "switchyard" / "stack" / "_kafka_pom.xml"
    assert packaged.read_bytes() == (REPO / "deploy" / "kafka" / "pom.xml").read_bytes()


def test_ports_for_children_are_drawn_below_the_ephemeral_range() -> None:
    # An outgoing connection takes its local port from the ephemeral range; a port picked
    # there for a child that binds seconds later can be gone by then (EADDRINUSE in CI).
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)] + free_ports(10)
    assert all(_LISTEN_FLOOR <= port < low for port in ports), ports
    assert len(set(ports[20:])) == 10
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free when handed out
