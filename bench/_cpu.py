"""CPU seconds used by each process of a running LocalSystem (Linux ``/proc``).

Everything in a bench run shares the machine's cores, so commands/s is bounded by the
CPU all processes together spend per command. Reporting that split says where a
throughput number comes from and what to optimise next.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from switchyard.system import LocalSystem

__all__ = ["CpuMeter", "process_ids"]


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # Fields after the command name (which may contain spaces): utime, stime are 14, 15.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_ids(system: LocalSystem) -> dict[str, int]:
    # The bench process itself generates the load and reads the results.
    pids = {"bench": os.getpid()}
    pids.update({child.name: child.proc.pid for child in system.supervisor.children})
    if system.stack is not None:
        for process in system.stack.status().get("processes", []):
            if process.get("alive"):
                pids[str(process["name"])] = int(process["pid"])
    return pids


class CpuMeter:
    """Call :meth:`start`, run the load, then :meth:`per` with the units of work done."""

    def __init__(self, system: LocalSystem) -> None:
        self._system = system
        self._before: Mapping[str, float] = {}

    def start(self) -> None:
        self._before = self._sample()

    def _sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pid in process_ids(self._system).items():
            seconds = _cpu_seconds(pid)
            if seconds is not None:
                out[name] = seconds
        return out

    def per(self, units: int) -> dict[str, Any]:
        """CPU milliseconds per unit of work, per process and in total, since :meth:`start`."""
        after = self._sample()
        used = {name: after[name] - self._before[name] for name in after if name in self._before}
        if not used or units <= 0:
            return {}
        per_unit = {name: round(seconds * 1000 / units, 3) for name, seconds in sorted(used.items())}
        return {"by_process": per_unit, "total": round(sum(used.values()) * 1000 / units, 3)}
