"""The whole system as local processes: what ``switchyard run``, the benchmarks and the
end-to-end tests start.

One :class:`LocalSystem` owns a local stack (or reuses servers named in the
environment), the API emulators, N routers, N workers per connector and the ingress,
each a ``switchyard <command>`` child in its own process group. Every router and worker
serves ``/metrics`` and health on a port of its own (``LocalSystem.metrics_urls``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from core.health import answers_ok
from core.settings import Settings, load_settings
from core.vault import VaultAdmin
from schemas import CONNECTORS, WorkspaceConfig

from ._supervisor import Supervisor
from .demo import DemoTenant
from .stack import LocalStack
from .stack._procs import check_port_free, free_port

__all__ = ["LocalSystem", "StartStopped", "ensure_pool_roles"]

# Secrets in the local system's environment that only some children may see.
_POOL_SECRETS = ("SWITCHYARD_VAULT_ROLE_ID", "SWITCHYARD_VAULT_SECRET_ID", "SWITCHYARD_VAULT_TOKEN_FILE")
_INGRESS_SECRETS = ("SWITCHYARD_ADMIN_TOKEN", "SWITCHYARD_OBSERVER_TOKEN", "SWITCHYARD_MCP_SESSION_SECRET")
_SECRETS = ("VAULT_TOKEN", *_INGRESS_SECRETS, *_POOL_SECRETS)
# Restarts of one child while the system starts before the start fails.
START_RESTARTS = 3


def _without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if not name.startswith(_SECRETS)}


class StartStopped(Exception):
    """:meth:`LocalSystem.start` was asked to stop before everything was ready."""


class LocalSystem:
    """Start, provision and stop every Switchyard process on this machine.

    Args:
        state_dir: logs, stack data and generated files.
        connectors: worker pools to start (one process each unless ``workers`` says more).
        workers: worker processes per connector (default 1).
        routers: router processes (they share the commands topic's partitions).
        port: ingress port (0: a free one).
        stack_env: servers to reuse (SWITCHYARD_KAFKA_BOOTSTRAP, VAULT_ADDR, VAULT_TOKEN and the
            pools' AppRole ids); None starts a private local stack.
        env: extra variables for every child (e.g. a topic prefix).
        progress: called with one line per step.
        args: extra command-line arguments per component ("ingress", "router", "worker").
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        connectors: tuple[str, ...] = CONNECTORS,
        workers: Mapping[str, int] | None = None,
        routers: int = 1,
        port: int = 0,
        stack_env: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        args: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.connectors = connectors
        self.workers = dict(workers or {})
        self.routers = routers
        self.port = port
        self._stack_env = dict(stack_env) if stack_env else None
        self._extra_env = dict(env or {})
        self._say = progress or (lambda _line: None)
        self._args = {name: list(value) for name, value in (args or {}).items()}
        self.stack: LocalStack | None = None
        self.supervisor: Supervisor | None = None
        self.env: dict[str, str] = {}
        self.ingress_url = ""
        self.emulator_url = ""
        self._worker_names: dict[str, list[str]] = {}
        self._router_names: list[str] = []
        self.metrics_urls: dict[str, str] = {}
        self._ingress_token = ""  # minted at start: a token of the switchyard-ingress policy
        self._stop: asyncio.Event | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def _children_file(self) -> Path:
        return self.state_dir / "children.json"

    async def start(self, stop: asyncio.Event | None = None) -> None:
        """Start everything and wait until every process is ready.

        Raises:
            RuntimeError: a process kept exiting or did not become ready in time.
            StartStopped: ``stop`` was set (checked between steps and while waiting;
                the local stack's own start, a download included, runs to its end).
        """
        self._stop = stop
        # Children a killed predecessor left running (on this state dir): stopped first,
        # which also frees its ports.
        for name in Supervisor.reap_leftovers(self._children_file):
            self._say(f"stopped {name}, left running by a run that was killed")
        if self.port:  # before minutes of start-up, not as an ingress that died at the end
            check_port_free(self.port, "the ingress (--port 0 takes any free port)")
        if self._stack_env is None:
            # A stack whose owner was killed (and so never stopped it) is stopped first.
            for reaped in LocalStack.reap_abandoned([self.state_dir / "stack"]):
                self._say(f"stopped a stack left running by a killed run in {reaped}")
            self._say("starting the local stack (the first start downloads Kafka from Maven Central)")
            self.stack = LocalStack(state_dir=self.state_dir / "stack", progress=lambda line: self._say(f"  {line}"))
            stack_env = await asyncio.to_thread(self.stack.up)
        else:
            stack_env = self._stack_env
        port = self.port or free_port()
        emulator_port = free_port()
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        self.ingress_url = f"http://127.0.0.1:{port}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "VAULT_"))}
        self.env = {
            **inherited,
            **stack_env,
            "SWITCHYARD_ADMIN_TOKEN": stack_env.get("SWITCHYARD_ADMIN_TOKEN") or secrets.token_urlsafe(24),
            "SWITCHYARD_CONNECTOR_BASE_URL": self.emulator_url,
            "SWITCHYARD_INGRESS_PORT": str(port),
            "SWITCHYARD_PUBLIC_URL": self.ingress_url,
            # Metrics and health ports on loopback only: the labels name every tenant.
            "SWITCHYARD_METRICS_HOST": "127.0.0.1",
            **self._extra_env,
        }
        from .topics import apply_topics

        self._check_stop()
        self._say("creating topics")
        await apply_topics(self.settings)
        # Each child gets the secrets of its own role only (start_child): the ingress a
        # token of the switchyard-ingress policy and the admin token, each worker its own
        # pool's AppRole, the router and the emulators none.
        self._ingress_token = await self._ingress_vault_token()
        self.supervisor = Supervisor(_without_secrets(self.env), self.log_dir, records=self._children_file)
        self._say(f"starting API emulators on {self.emulator_url}")
        self.start_child("emulators", ["emulators", "--host", "127.0.0.1", "--port", str(emulator_port)])
        self._check_stop()
        self._say("starting the router and worker pools: " + ", ".join(self.connectors))
        for _ in range(self.routers):
            self.add_router()
        for connector in self.connectors:
            for _ in range(self.workers.get(connector, 1)):
                self.add_worker(connector)
        self._say(f"starting the ingress on {self.ingress_url}")
        self.start_serving_metrics("ingress", ["ingress", *self._args.get("ingress", [])])
        await self._wait_http(f"{self.emulator_url}/_emulator/calls", 60, "emulators")
        await self._wait_http(f"{self.ingress_url}/readyz", 90, "ingress")
        # Routers and workers answer /readyz once their Kafka clients (and Vault, for
        # workers) are up and routers have recovered their tables: a demo or benchmark
        # started before that would measure start-up, not the pipeline.
        for name, url in list(self.metrics_urls.items()):
            if name != "ingress":
                await self._wait_http(url.removesuffix("/metrics") + "/readyz", 120, name)
        self.supervisor.settled()

    def add_router(self) -> str:
        """Start one more router process; the first is named ``router``, then ``router-2``, ...."""
        name = "router" if not self._router_names else f"router-{len(self._router_names) + 1}"
        self.start_serving_metrics(name, ["router", *self._args.get("router", [])])
        self._router_names.append(name)
        return name

    def stop_router(self) -> None:
        """Stop the most recently started router (SIGTERM, graceful)."""
        assert self.supervisor is not None
        name = self._router_names.pop()
        self.supervisor.stop(name)
        self.metrics_urls.pop(name, None)

    def add_worker(self, connector: str) -> str:
        names = self._worker_names.setdefault(connector, [])
        name = f"worker-{connector}-{len(names) + 1}"
        self.start_serving_metrics(name, ["worker", "--connector", connector, *self._args.get("worker", [])])
        names.append(name)
        return name

    def start_serving_metrics(self, name: str, argv: list[str]) -> None:
        """Start child ``name`` with a /metrics port of its own (in ``metrics_urls``)."""
        port = free_port()
        self.start_child(name, argv, {"SWITCHYARD_METRICS_PORT": str(port)})
        self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"

    def start_child(self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None) -> None:
        """Start child ``name`` (``switchyard <argv>``) with the secrets of its role only."""
        assert self.supervisor is not None
        self.supervisor.start(name, argv, extra_env={**self._secrets_of(argv), **(extra_env or {})})

    def _secrets_of(self, argv: list[str]) -> dict[str, str]:
        if argv[0] == "ingress":
            own = {name: value for name, value in self.env.items() if name in _INGRESS_SECRETS}
            return {**own, "VAULT_TOKEN": self._ingress_token}
        if argv[0] == "worker" and "--connector" in argv:
            pool = argv[argv.index("--connector") + 1].upper()
            return {
                name: value for name, value in self.env.items()
                if name.startswith(_POOL_SECRETS) and name.rpartition("_")[2] in (pool, "ID", "FILE")
            }  # fmt: skip
        return {}

    async def _ingress_vault_token(self) -> str:
        from core.vault import VaultAdmin

        admin = VaultAdmin(self.env["VAULT_ADDR"], self.env["VAULT_TOKEN"], mount=self.settings.vault_kv_mount)
        try:
            return await admin.ingress_token()
        finally:
            admin.close()

    def stop_worker(self, connector: str) -> None:
        """Stop the most recently started worker of a pool (SIGTERM, graceful)."""
        assert self.supervisor is not None
        name = self._worker_names[connector].pop()
        self.supervisor.stop(name)
        self.metrics_urls.pop(name, None)

    def _check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise StartStopped("asked to stop while starting")

    async def _wait_http(self, url: str, within: float, what: str) -> None:
        assert self.supervisor is not None
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                self._check_stop()
                # A child that exits while the others start (on a loaded machine a
                # worker may not reach Kafka within its 30 s) is restarted, as an
                # orchestrator would; one that keeps exiting ends the start.
                for name in self.supervisor.revive(max_restarts=START_RESTARTS):
                    self._say(f"{name} exited while starting and was restarted; see {self.log_dir}")
                if await answers_ok(session, url):
                    return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{what} did not become ready within {within:.0f}s; see {self.log_dir}")

    async def provision(
        self, tenants: list[DemoTenant], *, extra: list[WorkspaceConfig] = (),  # type: ignore[assignment]
        reuse: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Workspaces and API keys to the config topic, credentials to Vault, tokens to the emulators.

        ``reuse``: plaintext keys to publish again, per tenant (a config pasted into a client
        keeps working); the others get new keys. Returns each tenant's plaintext API key
        (shown once; stored only as a hash).
        """
        from core.vault import VaultAdmin
        from ingress.admin import new_api_key, publish_config
        from ingress.keys import key_record

        keys: dict[str, str] = {}
        records: list[Any] = list(extra)
        for tenant in tenants:
            owner = {"tenant_id": tenant.tenant_id, "spaces": [tenant.space_id],
                     "user_id": f"demo@{tenant.tenant_id}", "role": "admin"}  # fmt: skip
            kept = (reuse or {}).get(tenant.tenant_id)
            try:
                plaintext, record = (kept, key_record(kept, **owner)) if kept else new_api_key(**owner)
            except ValueError:  # not a key any more (a hand-edited file): a new one
                plaintext, record = new_api_key(**owner)
            keys[tenant.tenant_id] = plaintext
            records += [tenant.workspace(), record]
        await publish_config(self.settings, records)
        admin = VaultAdmin(self.env["VAULT_ADDR"], self.env["VAULT_TOKEN"])
        try:
            for tenant in tenants:
                await admin.put_credentials(tenant.tenant_id, tenant.connector, tenant.credentials)
        finally:
            admin.close()
        async with aiohttp.ClientSession() as session:
            for tenant in tenants:
                body = {"connector": tenant.connector, "tenant": tenant.tenant_id, "token": tenant.emulator_token}
                async with session.post(f"{self.emulator_url}/_emulator/tokens", json=body) as response:
                    response.raise_for_status()
            await self._wait_keys_known(session, keys)
        return keys

    async def _wait_keys_known(self, session: aiohttp.ClientSession, keys: dict[str, str]) -> None:
        """Wait (bounded) until the ingress has read the new keys from the config topic."""
        async with asyncio.timeout(30):
            for key in keys.values():
                while True:
                    async with session.get(
                        f"{self.ingress_url}/v1/commands/unknown-command-id",
                        headers={"Authorization": f"Bearer {key}"},
                    ) as response:
                        if response.status != 401:  # 404: authenticated, no such command
                            break
                    await asyncio.sleep(0.1)

    def dead(self) -> list[str]:
        return self.supervisor.dead() if self.supervisor else []

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop_all()
            self.supervisor = None
        if self.stack is not None:
            self.stack.down()
            self.stack = None


async def ensure_pool_roles(stack_env: Mapping[str, str], connectors: Iterable[str]) -> dict[str, str]:
    """``stack_env`` plus AppRole ids for every pool (servers from the environment may lack them)."""
    env = dict(stack_env)
    missing = [c for c in connectors if f"SWITCHYARD_VAULT_ROLE_ID_{c.upper()}" not in env]
    if missing:
        admin = VaultAdmin(env["VAULT_ADDR"], env["VAULT_TOKEN"])
        try:
            for connector in missing:
                creds = await admin.bootstrap_pool(connector)
                env[f"SWITCHYARD_VAULT_ROLE_ID_{connector.upper()}"] = creds.role_id
                env[f"SWITCHYARD_VAULT_SECRET_ID_{connector.upper()}"] = creds.secret_id
        finally:
            admin.close()
    return env
