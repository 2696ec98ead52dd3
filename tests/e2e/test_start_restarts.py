"""While the local system starts, a child that exits is restarted, as an orchestrator
would (on a loaded machine a worker may not reach Kafka within its 30 s); one that keeps
exiting ends the start with the child's name. Real children (the API emulators), no
stack."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard._supervisor import Supervisor
from switchyard.stack._procs import free_port
from switchyard.system import START_RESTARTS, LocalSystem


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def system(tmp_path: Path, said: list[str]) -> Iterator[LocalSystem]:
    local = LocalSystem(tmp_path, connectors=(), progress=said.append)
    local.supervisor = Supervisor(dict(os.environ), tmp_path / "logs")
    try:
        yield local
    finally:
        local.supervisor.stop_all(grace=5)


def _hold(port: int) -> socket.socket:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def _wait_exited(system: LocalSystem, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not system.dead():
        assert time.monotonic() < deadline, "the emulators did not exit on a taken port"
        time.sleep(0.1)


async def test_a_child_that_exits_while_starting_is_restarted(system: LocalSystem, said: list[str]) -> None:
    port = free_port()
    holder = _hold(port)  # the emulators' first start finds the port taken and exits
    system.start_child("emulators", ["emulators", "--host", "127.0.0.1", "--port", str(port)])
    _wait_exited(system)
    holder.close()

    await system._wait_http(f"http://127.0.0.1:{port}/_emulator/calls", 60, "emulators")

    assert said == [f"emulators exited while starting and was restarted; see {system.log_dir}"]


async def test_a_child_that_keeps_exiting_ends_the_start(system: LocalSystem, said: list[str]) -> None:
    port = free_port()
    holder = _hold(port)
    try:
        system.start_child("emulators", ["emulators", "--host", "127.0.0.1", "--port", str(port)])
        with pytest.raises(RuntimeError, match="emulators keeps exiting"):
            await system._wait_http(f"http://127.0.0.1:{port}/_emulator/calls", 120, "emulators")
    finally:
        holder.close()
    assert len(said) == START_RESTARTS
