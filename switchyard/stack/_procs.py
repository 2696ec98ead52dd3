"""Detached child processes: spawn in their own process group, find, and stop them.

Every server the stack starts leads its own session (``start_new_session``), so it
outlives the CLI that started it and ``killpg`` reaches anything it spawned in turn.
A pid is only trusted together with its start time from ``/proc``: pids are reused,
and ``down`` must never signal a stranger that inherited one.
"""

from __future__ import annotations

import errno
import functools
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._errors import StackError

__all__ = [
    "ProcessRecord",
    "check_port_free",
    "current_process",
    "exit_error",
    "free_port",
    "free_ports",
    "spawn",
    "stop_group",
]


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A started process: its pid (also its process group id) and start time in clock ticks."""

    pid: int
    start_time: int

    def alive(self) -> bool:
        """True when this very process still runs (a zombie counts as gone)."""
        stat = _stat(self.pid)
        return stat is not None and stat[2] == self.start_time and _running(stat)

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: Mapping[str, int]) -> ProcessRecord:
        return cls(pid=int(data["pid"]), start_time=int(data["start_time"]))


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(pid, state, start time) from ``/proc/<pid>/stat``, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself hold spaces or ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return pid, rest[0], int(rest[19])


def _running(stat: tuple[int, str, int]) -> bool:
    if stat[1] != "Z":
        return True
    # A killed JVM's main thread turns zombie while its other threads still tear down
    # and hold its sockets; it is gone only when no thread is left.
    try:
        return len(os.listdir(f"/proc/{stat[0]}/task")) > 1
    except OSError:
        return False


def current_process() -> ProcessRecord:
    """The record of this very process (the owner of an in-process stack)."""
    stat = _stat(os.getpid())
    return ProcessRecord(pid=os.getpid(), start_time=stat[2] if stat else 0)


def spawn(
    argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` detached in a new session, output appended to ``log``.

    Raises:
        StackError: when the executable cannot be started.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        os.chmod(log, 0o600)  # server logs may print tokens (the dev server prints its root token)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise StackError(f"cannot start {Path(argv[0]).name}: {exc.strerror}") from exc
    stat = _stat(proc.pid)
    return proc, ProcessRecord(pid=proc.pid, start_time=stat[2] if stat else 0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds while only zombies remain; those are gone for our purposes.
    return any(
        stat is not None and stat[1] != "Z" for stat in (_stat(pid) for pid in _group_members(pgid))
    )


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                members.append(int(entry.name))
        except OSError:
            continue
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_group(
    record: ProcessRecord,
    *,
    grace: float = 15.0,
    sig: signal.Signals = signal.SIGTERM,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Signal a process group, wait up to ``grace`` seconds, then SIGKILL whatever is left.

    Does nothing when the recorded process no longer runs and its group is empty
    (its pid may belong to someone else by now).
    """
    if not record.alive() and not _group_alive(record.pid):
        _reap(proc)
        return
    _signal_group(record.pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(proc)
        if not _group_alive(record.pid):
            return
        time.sleep(0.1)
    _signal_group(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        _reap(proc)
        if not _group_alive(record.pid):
            return
        time.sleep(0.05)
    raise StackError(f"process group {record.pid} survived SIGKILL")


def _reap(proc: subprocess.Popen[bytes] | None) -> None:
    # Only our own children can be reaped; others are reaped by init once they exit.
    if proc is not None:
        try:
            proc.poll()
        except ChildProcessError:
            pass


# Ports handed to children that bind later are drawn below the kernel's ephemeral range:
# a port picked with bind(0) comes from that range, and an outgoing connection (a Kafka
# or Vault client starting meanwhile) could take it before the child binds it (seen
# once in CI: the ingress, started seconds after its port was picked, got EADDRINUSE).
_LISTEN_FLOOR = 10_000


@functools.cache
def _listen_range() -> tuple[int, int] | None:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (_LISTEN_FLOOR, low - 1) if low - 1 > _LISTEN_FLOOR + 1000 else None


def _bound_socket() -> socket.socket:
    """A socket bound on 127.0.0.1 to a port no outgoing connection will take."""
    span = _listen_range()
    if span is not None:
        for _ in range(100):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", random.randint(*span)))
                return sock
            except OSError:
                sock.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with _bound_socket() as sock:
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open at once, so none repeats)."""
    sockets = [_bound_socket() for _ in range(count)]
    try:
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_port_free(port: int, what: str, *, within: float = 0.0) -> None:
    """Raise when ``port`` on 127.0.0.1 cannot be bound (retrying for ``within`` seconds).

    Raises:
        StackError: the port is taken (or not allowed).
    """
    deadline = time.monotonic() + within
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    reason = f"cannot be used ({exc.strerror})"
                    raise StackError(f"port {port} on 127.0.0.1 for {what} {reason}") from None
        if time.monotonic() >= deadline:
            raise StackError(f"port {port} on 127.0.0.1 for {what} is taken")
        time.sleep(0.1)


def exit_error(what: str, port: int, log: Path, exit_status: int | None) -> StackError:
    """One line saying why a server died while starting, from the end of its log."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-40:]
    except OSError:
        tail = []
    if any("address already in use" in line.lower() for line in tail):
        return StackError(f"port {port} on 127.0.0.1 for {what} is taken")
    last = next((line.strip() for line in reversed(tail) if line.strip()), "no output")
    status = "" if exit_status is None else f" (exit status {exit_status})"
    return StackError(f"{what} exited during start{status}: {last[:200]} (log: {log})")
