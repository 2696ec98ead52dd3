"""What a running stack records in its state directory.

``stack.json`` holds pids, start times, ports and paths (no secrets); ``stack.env`` holds
the variables other processes read, secrets included, as ``export`` lines (mode 0600).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._procs import ProcessRecord

__all__ = [
    "ENV_FILE",
    "STATE_FILE",
    "StackState",
    "process_title",
    "read_env_file",
    "status_report",
    "write_env_file",
]

STATE_FILE = "stack.json"
ENV_FILE = "stack.env"


@dataclass(slots=True)
class StackState:
    """Everything needed to find, restart and stop the stack's processes later."""

    brokers: int
    java: str
    lib: str
    log4j: str
    heap: str
    cluster_id: str
    kafka_ports: list[int]
    controller_ports: list[int]
    vault_port: int
    bao: str
    owner: ProcessRecord
    detached: bool
    kafka: list[ProcessRecord | None] = field(default_factory=list)
    vault: ProcessRecord | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka_ports)

    @property
    def vault_addr(self) -> str:
        return f"http://127.0.0.1:{self.vault_port}"

    def records(self) -> list[tuple[str, ProcessRecord | None]]:
        named: list[tuple[str, ProcessRecord | None]] = [
            (f"kafka-{index}", record) for index, record in enumerate(self.kafka)
        ]
        return [*named, ("vault", self.vault)]

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "version": 1,
            "brokers": self.brokers,
            "java": self.java,
            "lib": self.lib,
            "log4j": self.log4j,
            "heap": self.heap,
            "cluster_id": self.cluster_id,
            "kafka_ports": self.kafka_ports,
            "controller_ports": self.controller_ports,
            "vault_port": self.vault_port,
            "bao": self.bao,
            "owner": self.owner.to_json(),
            "detached": self.detached,
            "kafka": [None if r is None else r.to_json() for r in self.kafka],
            "vault": None if self.vault is None else self.vault.to_json(),
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_bytes(cls, raw: bytes) -> StackState:
        data = orjson.loads(raw)
        return cls(
            brokers=int(data["brokers"]),
            java=data["java"],
            lib=data["lib"],
            log4j=data["log4j"],
            heap=data["heap"],
            cluster_id=data["cluster_id"],
            kafka_ports=[int(p) for p in data["kafka_ports"]],
            controller_ports=[int(p) for p in data["controller_ports"]],
            vault_port=int(data["vault_port"]),
            bao=data["bao"],
            owner=ProcessRecord.from_json(data["owner"]),
            detached=bool(data["detached"]),
            kafka=[None if r is None else ProcessRecord.from_json(r) for r in data["kafka"]],
            vault=None if data["vault"] is None else ProcessRecord.from_json(data["vault"]),
        )

    def save(self, state_dir: Path) -> None:
        path = state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)  # readers never see half a file

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        try:
            return cls.from_bytes((state_dir / STATE_FILE).read_bytes())
        except FileNotFoundError:
            return None


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """Write ``export NAME=value`` lines, readable by the owner only (they hold tokens)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# switchyard local stack: `source` this file\n")
        out.writelines(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return env
    for line in text.splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, _, value = parts[1].partition("=")
            env[key] = value
    return env


def process_title(name: str) -> str:
    """``kafka-0`` → ``kafka node 1``; ``vault`` → ``openbao``."""
    if name.startswith("kafka-"):
        return f"kafka node {int(name.removeprefix('kafka-')) + 1}"
    return "openbao"


def status_report(state: StackState, state_dir: Path) -> dict[str, Any]:
    """What runs where: one entry per process with pid, addresses, liveness and log."""
    processes: list[dict[str, Any]] = []
    for index, record in enumerate(state.kafka):
        processes.append({
            "name": process_title(f"kafka-{index}"),
            "pid": None if record is None else record.pid,
            "alive": record is not None and record.alive(),
            "address": f"127.0.0.1:{state.kafka_ports[index]}",
            "controller": f"127.0.0.1:{state.controller_ports[index]}",
            "log": str(state_dir / f"kafka-{index + 1}" / "kafka.log"),
        })  # fmt: skip
    processes.append({
        "name": process_title("vault"),
        "pid": None if state.vault is None else state.vault.pid,
        "alive": state.vault is not None and state.vault.alive(),
        "address": state.vault_addr,
        "log": str(state_dir / "bao.log"),
    })  # fmt: skip
    return {
        "state_dir": str(state_dir),
        "running": any(p["alive"] for p in processes),
        "brokers": state.brokers,
        "bootstrap": state.bootstrap,
        "vault_addr": state.vault_addr,
        "env_file": str(state_dir / ENV_FILE),
        "processes": processes,
    }
