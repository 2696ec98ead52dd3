"""``LocalStack``: real Kafka (KRaft) and a real OpenBao dev server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from core.errors import KafkaUnavailable
from core.settings import load_settings

from . import _kafka as kafka
from . import _vault as vault
from ._errors import StackError
from ._procs import (
    ProcessRecord,
    check_port_free,
    current_process,
    exit_error,
    free_ports,
    spawn,
    stop_group,
)
from ._state import (
    ENV_FILE,
    STATE_FILE,
    StackState,
    process_title,
    read_env_file,
    status_report,
    write_env_file,
)

__all__ = ["LocalStack"]

T = TypeVar("T")

KAFKA_START_TIMEOUT = 120.0
VAULT_START_TIMEOUT = 30.0


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # On a fresh loop in a helper thread: callers may already be inside an event loop
    # (an async fixture or test), where asyncio.run would refuse to start.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stack") as pool:
        return pool.submit(asyncio.run, coro).result()


class LocalStack:
    """Start, inspect and stop a local Kafka cluster and OpenBao server.

    Args:
        state_dir: where configs, data, logs, ``stack.json`` and ``stack.env`` live.
        brokers: Kafka nodes (1, or 3 for fault tests: RF 3, ``min.insync.replicas=2``).
        home: cache root for the Kafka jars (default ``Settings.home``).
        kafka_port / vault_port: fixed ports (default: free ones).
        heap: JVM ``-Xmx`` per Kafka node.
        progress: called with one line per step (the CLI prints them).
        detached: the stack outlives this process on purpose (the CLI); otherwise
            :meth:`reap_abandoned` may stop it once the owning process is gone.
    """

    def __init__(
        self,
        state_dir: Path,
        brokers: int = 1,
        home: Path | None = None,
        *,
        kafka_port: int | None = None,
        vault_port: int | None = None,
        heap: str = "512m",
        progress: Callable[[str], None] | None = None,
        detached: bool = False,
    ) -> None:
        if not 1 <= brokers <= 5:
            raise StackError(f"--brokers must be between 1 and 5, not {brokers}")
        self.state_dir = Path(state_dir).resolve()
        self.brokers = brokers
        # SWITCHYARD_HOME (where the Kafka jars are cached) from the environment, as the
        # stack command reads it; nothing else of it matters here.
        if home is None:
            home = load_settings({"SWITCHYARD_HOME": os.environ.get("SWITCHYARD_HOME", "")}).home
        self.home = Path(home)
        self.kafka_port = kafka_port
        self.vault_port = vault_port
        self.heap = heap
        self.detached = detached
        self._progress = progress or (lambda _line: None)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._state: StackState | None = None

    # ----------------------------------------------------------------- inspection

    @property
    def env_file(self) -> Path:
        return self.state_dir / ENV_FILE

    @property
    def state(self) -> StackState | None:
        if self._state is None:
            self._state = StackState.load(self.state_dir)
        return self._state

    @property
    def env(self) -> dict[str, str]:
        """The variables of the running stack (read back from ``stack.env``)."""
        return read_env_file(self.env_file)

    def _reap_children(self) -> None:
        # Our own children that someone else stopped (e.g. the CLI's `down`) stay zombies
        # until polled; polling also keeps Popen from warning that they "still run".
        for name, proc in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[name]

    def running(self) -> bool:
        self._reap_children()
        state = self.state
        return state is not None and any(r is not None and r.alive() for _, r in state.records())

    def dead(self) -> list[str]:
        """The stack's processes that have exited, named as in :meth:`status`."""
        return [p["name"] for p in self.status()["processes"] if not p["alive"]]

    def status(self) -> dict[str, Any]:
        """What runs where: one entry per process with pid, ports and liveness."""
        self._reap_children()
        state = self.state
        if state is None:
            return {"state_dir": str(self.state_dir), "running": False, "processes": []}
        return status_report(state, self.state_dir)

    # ----------------------------------------------------------------- up / down

    def up(self) -> dict[str, str]:
        """Start Kafka and OpenBao, wait until both answer, bootstrap OpenBao.

        Returns the environment other processes need (also written to ``stack.env``).

        Raises:
            StackError: something is missing, a port is taken, a server did not come up,
                or a stack already runs from this state directory.
        """
        if self.running():
            raise StackError(
                f"a stack already runs from {self.state_dir}; stop it with "
                f"`switchyard stack down --state-dir {self.state_dir}`"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._forget()
        java = kafka.check_java()
        if self.kafka_port is not None:
            check_port_free(self.kafka_port, "Kafka")
        if self.vault_port is not None:
            check_port_free(self.vault_port, "OpenBao")
        bao = vault.bao_binary()
        lib = self._ensure_jars()
        taken = {p for p in (self.kafka_port, self.vault_port) if p is not None}
        ports = [p for p in free_ports(2 * self.brokers + 3) if p not in taken]
        kafka_ports = ports[: self.brokers]
        if self.kafka_port is not None:
            kafka_ports[0] = self.kafka_port
        state = StackState(
            brokers=self.brokers,
            java=java,
            lib=str(lib),
            log4j=str(self.state_dir / "log4j2.properties"),
            heap=self.heap,
            cluster_id=kafka.new_cluster_id(),
            kafka_ports=kafka_ports,
            controller_ports=ports[self.brokers : 2 * self.brokers],
            vault_port=self.vault_port or ports[2 * self.brokers],
            bao=str(bao),
            owner=current_process(),
            detached=self.detached,
            kafka=[None] * self.brokers,
        )
        self._state = state
        try:
            return self._start(state)
        except BaseException:
            self.down()
            raise

    def _ensure_jars(self) -> Path:
        pom = kafka.find_pom()
        version = kafka.kafka_version(pom)
        lib = self.home / "kafka" / version / "lib"
        if not kafka.jars_installed(lib, version):
            kafka.find_maven()  # fail before announcing a download
            self._progress(f"installing Kafka {version} jars into {lib} (first run only)…")
            kafka.install_jars(pom, lib, version)
        return lib

    def _start(self, state: StackState) -> dict[str, str]:
        kafka.write_log4j(Path(state.log4j))
        nodes = [self._node(state, i) for i in range(state.brokers)]
        for node in nodes:
            shutil.rmtree(node.directory, ignore_errors=True)  # a fresh cluster every time
            kafka.write_server_properties(node, nodes)
        self._progress(f"formatting Kafka storage (cluster {state.cluster_id})…")
        with ThreadPoolExecutor(max_workers=state.brokers) as pool:
            list(
                pool.map(
                    lambda n: kafka.format_storage(
                        state.java, Path(state.lib), Path(state.log4j), n, state.cluster_id
                    ),
                    nodes,
                )
            )
        self._progress(
            "starting broker…" if state.brokers == 1 else f"starting {state.brokers} brokers…"
        )
        state.save(self.state_dir)
        for node in nodes:
            self._spawn_kafka(state, node.index)
        self._progress("starting OpenBao…")
        token = secrets.token_urlsafe(24)
        self._spawn_vault(state, token)
        pool_env = self._wait_vault_and_bootstrap(state, token)
        self._progress(f"waiting for Kafka at {state.bootstrap}…")
        _run(self._wait_kafka(state, set(range(1, state.brokers + 1))))
        env = {
            "SWITCHYARD_KAFKA_BOOTSTRAP": state.bootstrap,
            "SWITCHYARD_REPLICATION_FACTOR": str(min(3, state.brokers)),
            "VAULT_ADDR": state.vault_addr,
            "VAULT_TOKEN": token,
            "SWITCHYARD_ADMIN_TOKEN": secrets.token_urlsafe(24),
            **pool_env,
        }
        write_env_file(self.env_file, env)
        return env

    def down(self, grace: float = 15.0) -> list[str]:
        """Stop every process this stack started (SIGTERM, SIGKILL after ``grace`` s).

        Returns a description ("kafka node 1 (pid 123)") of each process that was still running.
        """
        state = self.state
        if state is None:
            return []
        live = [
            (name, record)
            for name, record in state.records()
            if record is not None and record.alive()
        ]
        with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:
            futures = [
                pool.submit(stop_group, record, grace=grace, proc=self._procs.get(name))
                for name, record in live
            ]
            for future in futures:
                future.result()
        for proc in self._procs.values():
            if proc.poll() is None:  # only possible for a record that was never saved
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()
        for index in range(state.brokers):
            shutil.rmtree(self._node(state, index).data, ignore_errors=True)
        for name in (STATE_FILE, ENV_FILE):
            (self.state_dir / name).unlink(missing_ok=True)
        self._state = None
        return [f"{process_title(name)} (pid {record.pid})" for name, record in live]

    def _forget(self) -> None:
        """Drop the records of a stack whose processes all died (a stale stack.json)."""
        if self.state is not None:
            self.down(grace=1.0)

    # ----------------------------------------------------------------- single processes

    def stop_kafka(
        self, index: int, sig: signal.Signals = signal.SIGKILL, grace: float = 15.0
    ) -> None:
        """Stop one Kafka node (SIGKILL by default: a crash, for the fault suites)."""
        state = self._require()
        record = state.kafka[index]
        if record is not None:
            stop_group(record, sig=sig, grace=grace, proc=self._procs.pop(f"kafka-{index}", None))
        state.kafka[index] = None
        state.save(self.state_dir)

    def start_kafka(self, index: int, timeout: float = KAFKA_START_TIMEOUT) -> None:
        """Start a stopped Kafka node on its old ports and data, wait until it registers.

        Raises:
            StackError: the node did not rejoin within ``timeout`` seconds.
        """
        state = self._require()
        record = state.kafka[index]
        if record is not None and record.alive():
            return
        check_port_free(state.kafka_ports[index], f"Kafka node {index + 1}", within=10.0)
        self._spawn_kafka(state, index)
        _run(self._wait_kafka(state, {index + 1}, timeout))

    def stop_vault(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop OpenBao. A dev server keeps everything in memory: all its data is lost."""
        state = self._require()
        if state.vault is not None:
            stop_group(state.vault, sig=sig, proc=self._procs.pop("vault", None))
        state.vault = None
        state.save(self.state_dir)

    def start_vault(self) -> dict[str, str]:
        """Start OpenBao again on its old port and token and re-run the bootstrap.

        The dev server comes back empty: the bootstrap reinstalls the pools' previous
        AppRole ids (running workers keep working), but tenants' credentials must be
        stored again. Returns the updated env (``stack.env`` too).

        Raises:
            StackError: the server did not come up or the bootstrap failed.
        """
        state = self._require()
        env = self.env
        token = env["VAULT_TOKEN"]
        if state.vault is None or not state.vault.alive():
            check_port_free(state.vault_port, "OpenBao", within=10.0)
            self._spawn_vault(state, token)
        env.update(self._wait_vault_and_bootstrap(state, token, keep=env))
        write_env_file(self.env_file, env)
        return env

    def restart_vault(self) -> dict[str, str]:
        """Stop and start OpenBao (see :meth:`start_vault`: its data does not survive)."""
        self.stop_vault()
        return self.start_vault()

    @classmethod
    def reap_abandoned(cls, state_dirs: Iterable[Path]) -> list[Path]:
        """Stop non-detached stacks whose owning process is gone (e.g. a killed test run).

        Returns the state directories that were cleaned up.
        """
        reaped = []
        for state_dir in state_dirs:
            stack = cls(state_dir)
            state = stack.state
            if state is None or state.detached or state.owner.alive():
                continue
            if stack.down(grace=2.0):
                reaped.append(Path(state_dir))
        return reaped

    # ----------------------------------------------------------------- internals

    def _require(self) -> StackState:
        state = self.state
        if state is None:
            raise StackError(f"no stack recorded in {self.state_dir}")
        return state

    def _node(self, state: StackState, index: int) -> kafka.KafkaNode:
        return kafka.KafkaNode(
            index=index,
            port=state.kafka_ports[index],
            controller_port=state.controller_ports[index],
            directory=self.state_dir / f"kafka-{index + 1}",
        )

    def _spawn_kafka(self, state: StackState, index: int) -> None:
        node = self._node(state, index)
        argv = kafka.node_argv(state.java, Path(state.lib), Path(state.log4j), node, state.heap)
        proc, record = spawn(argv, log=node.log, cwd=node.directory)
        self._procs[f"kafka-{index}"] = proc
        state.kafka[index] = record
        state.save(self.state_dir)

    def _spawn_vault(self, state: StackState, token: str) -> None:
        # The child gets our environment minus any Vault/OpenBao client settings, plus
        # its root token (kept out of argv, which `ps` shows to everyone).
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        child_env["BAO_DEV_ROOT_TOKEN_ID"] = token
        proc, record = spawn(
            vault.bao_argv(Path(state.bao), state.vault_port),
            log=self.state_dir / "bao.log",
            env=child_env,
            cwd=self.state_dir,
        )
        self._procs["vault"] = proc
        state.vault = record
        state.save(self.state_dir)

    def _wait_vault_and_bootstrap(
        self, state: StackState, token: str, keep: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        deadline = time.monotonic() + VAULT_START_TIMEOUT
        while not vault.vault_healthy(state.vault_addr):
            self._check_alive(
                "vault", state.vault, self.state_dir / "bao.log", state.vault_port, "OpenBao"
            )
            if time.monotonic() > deadline:
                raise StackError(
                    f"OpenBao did not answer at {state.vault_addr} within {VAULT_START_TIMEOUT:.0f} s"
                )
            time.sleep(0.1)
        self._progress("bootstrapping OpenBao (KV, policies, one AppRole per connector pool)…")
        return _run(vault.bootstrap(state.vault_addr, token, keep=keep))

    async def _wait_kafka(
        self, state: StackState, node_ids: set[int], within: float = KAFKA_START_TIMEOUT
    ) -> None:
        # Each node must answer on its own port and see itself registered: the cluster
        # keeps listing a killed broker until its session times out, so asking any
        # node would report a restarted one as back too early.
        deadline = time.monotonic() + within
        waiting = set(node_ids)
        while waiting:
            for node_id in sorted(waiting):
                node = self._node(state, node_id - 1)
                record = state.kafka[node_id - 1]
                self._check_alive(
                    f"kafka-{node.index}", record, node.log, node.port, f"Kafka node {node_id}"
                )
                try:
                    if node_id in await kafka.cluster_brokers(f"127.0.0.1:{node.port}"):
                        waiting.discard(node_id)
                except KafkaUnavailable:
                    pass
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"Kafka at {state.bootstrap} did not come up within {within:.0f} s; see {self.state_dir}"
                )
            await asyncio.sleep(0.3)

    def _check_alive(
        self, name: str, record: ProcessRecord | None, log: Path, port: int, what: str
    ) -> None:
        if record is not None and record.alive():
            return
        proc = self._procs.get(name)
        raise exit_error(what, port, log, None if proc is None else proc.poll())
