"""Child processes of ``switchyard run``: started in their own process groups, stopped as a whole."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .stack._procs import ProcessRecord, spawn, stop_group

__all__ = ["Supervisor"]


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    record: ProcessRecord
    log: Path
    argv: list[str]
    env: dict[str, str]
    restarts: int = 0


class Supervisor:
    """Starts ``switchyard <command>`` children with one environment; stops them all.

    The children run in sessions of their own, so they outlive a parent killed outright
    (SIGKILL, the OOM killer). With ``records``, the supervisor keeps their pids in that
    file, and :meth:`reap_leftovers` stops what a killed predecessor left running.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path, records: Path | None = None) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.records = records
        self.children: list[_Child] = []

    @staticmethod
    def reap_leftovers(records: Path, grace: float = 5.0) -> list[str]:
        """Stop the children a previous supervisor recorded in ``records`` that still run
        (its owner was killed before it could); returns their names."""
        try:
            entries = json.loads(records.read_text())
        except (OSError, ValueError):
            return []
        stopped = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                record = ProcessRecord.from_json(entry)
            except (KeyError, TypeError, ValueError):
                continue
            if record.alive():
                stop_group(record, grace=grace)
                stopped.append(str(entry.get("name", record.pid)))
        records.unlink(missing_ok=True)
        return stopped

    def _remember(self) -> None:
        if self.records is None:
            return
        self.records.parent.mkdir(parents=True, exist_ok=True)
        entries = [{"name": child.name, **child.record.to_json()} for child in self.children]
        self.records.write_text(json.dumps(entries))

    def start(self, name: str, argv: Sequence[str], extra_env: Mapping[str, str] | None = None) -> Path:
        log = self.log_dir / f"{name}.log"
        env = {**self.env, **(extra_env or {})}
        full = [sys.executable, "-m", "switchyard.cli", *argv]
        proc, record = spawn(full, log=log, env=env)
        self.children.append(_Child(name, proc, record, log, full, env))
        self._remember()
        return log

    def revive(self, max_restarts: int = 5) -> list[str]:
        """Restart children that exited (as an orchestrator would); returns their names.

        Raises:
            RuntimeError: a child exited more than ``max_restarts`` times.
        """
        revived = []
        for child in self.children:
            if child.proc.poll() is None:
                continue
            if child.restarts >= max_restarts:
                raise RuntimeError(f"{child.name} keeps exiting; see {child.log}")
            child.proc, child.record = spawn(child.argv, log=child.log, env=child.env)
            child.restarts += 1
            revived.append(child.name)
        if revived:
            self._remember()
        return revived

    def settled(self) -> None:
        """Every child is ready: restarts while starting no longer count against the
        limit of restarts while serving."""
        for child in self.children:
            child.restarts = 0

    def dead(self) -> list[str]:
        return [child.name for child in self.children if child.proc.poll() is not None]

    def stop(self, name: str, grace: float = 10.0) -> None:
        for child in list(self.children):
            if child.name == name:
                stop_group(child.record, grace=grace, proc=child.proc)
                self.children.remove(child)
        self._remember()

    def stop_all(self, grace: float = 10.0) -> None:
        # Stop in reverse start order: producers of work (ingress) go before consumers.
        for child in reversed(self.children):
            stop_group(child.record, grace=grace, proc=child.proc)
        self.children.clear()
        if self.records is not None:
            self.records.unlink(missing_ok=True)
