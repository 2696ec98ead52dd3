"""``switchyard run``: the whole system on this machine, with the demo.

Starts the local stack (real Kafka + OpenBao), the API emulators, the ingress, the
router and one worker pool per connector; provisions the demo tenants (workspace,
API key, credentials in Vault, tokens at the emulators); sends the "daily summary"
through the MCP endpoint for each tenant with the official MCP client and prints which
connector ran, the result and the trace; writes ready-to-paste MCP client
configurations; then serves until Ctrl-C (or exits with ``--once``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from core.settings import load_settings
from schemas import CONNECTORS

from ._supervisor import Supervisor
from .demo import DemoTenant, demo_tenants
from .stack import LocalStack
from .stack._procs import free_port

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="exit after the demo (0 only if all succeeded)")
    parser.add_argument("--port", type=int, default=8080, help="ingress port (default 8080; 0 = any free)")
    parser.add_argument("--state-dir", type=Path, default=None, help="default: <home>/run")
    parser.add_argument("--connectors", default=",".join(CONNECTORS), help="worker pools to start")


def _say(line: str) -> None:
    print(line, flush=True)


async def _wait_http(url: str, within: float, what: str, supervisor: Supervisor) -> None:
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if supervisor.dead():
                raise RuntimeError(f"{', '.join(supervisor.dead())} exited early (see logs)")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready within {within:.0f}s")


async def _provision(
    env: dict[str, str], tenants: list[DemoTenant], emulator_url: str
) -> dict[str, str]:
    """Workspaces and API keys to the config topic, credentials to Vault, tokens to the emulators."""
    from core.vault import VaultAdmin
    from ingress.admin import new_api_key, publish_config

    settings = load_settings(env)
    keys: dict[str, str] = {}
    records: list[Any] = []
    for tenant in tenants:
        plaintext, record = new_api_key(
            tenant_id=tenant.tenant_id, spaces=[tenant.space_id], user_id=f"demo@{tenant.tenant_id}", role="admin"
        )
        keys[tenant.tenant_id] = plaintext
        records += [tenant.workspace(), record]
    await publish_config(settings, records)
    admin = VaultAdmin(env["VAULT_ADDR"], env["VAULT_TOKEN"])
    try:
        for tenant in tenants:
            await admin.put_credentials(tenant.tenant_id, tenant.connector, tenant.credentials)
    finally:
        admin.close()
    async with aiohttp.ClientSession() as session:
        for tenant in tenants:
            body = {"connector": tenant.connector, "tenant": tenant.tenant_id, "token": tenant.emulator_token}
            async with session.post(f"{emulator_url}/_emulator/tokens", json=body) as response:
                response.raise_for_status()
    return keys


def _client_configs(ingress_url: str, keys: dict[str, str], tenants: list[DemoTenant]) -> dict[str, Any]:
    servers = {}
    for tenant in tenants:
        servers[f"switchyard-{tenant.tenant_id}"] = {
            "url": f"{ingress_url}/mcp/{tenant.space_id}",
            "headers": {"Authorization": f"Bearer {keys[tenant.tenant_id]}"},
        }
    return {"mcpServers": servers}


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


async def _demo(ingress_url: str, keys: dict[str, str], tenants: list[DemoTenant]) -> bool:
    from ._demo_client import call_daily_summary, format_trace

    all_ok = True
    for tenant in tenants:
        outcome = await call_daily_summary(
            f"{ingress_url}/mcp/{tenant.space_id}", keys[tenant.tenant_id],
            summary=f"{tenant.tenant_id}: 42 tickets closed, 3 incidents resolved",
        )
        ok = outcome.ok
        all_ok &= ok
        mark = "ok " if ok else "ERR"
        _say(f"  [{mark}] tenant {tenant.tenant_id:6} → {outcome.connector}.{outcome.operation}  "
             f"command {outcome.command_id}  tools: {', '.join(outcome.tools)}")
        _say(f"        result: {outcome.summary}")
        for line in format_trace(outcome.spans):
            _say(f"        {line}")
    return all_ok


def run(args: argparse.Namespace) -> int:
    from core.logs import configure_logging

    configure_logging("switchyard-run", "WARNING")
    base = load_settings()
    state_dir = args.state_dir or base.home / "run"
    connectors = [c for c in args.connectors.split(",") if c]
    stack = LocalStack(state_dir=state_dir / "stack", progress=lambda line: _say(f"  {line}"))
    supervisor: Supervisor | None = None
    stop = asyncio.Event()

    async def main() -> int:
        nonlocal supervisor
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        _say("switchyard: starting the local stack (the first start downloads Kafka from Maven Central)")
        env = await asyncio.to_thread(stack.up)
        port = args.port or free_port()
        emulator_port = free_port()
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        ingress_url = f"http://127.0.0.1:{port}"
        child_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "VAULT_"))},
            **env,
            "SWITCHYARD_ADMIN_TOKEN": env.get("SWITCHYARD_ADMIN_TOKEN") or secrets.token_urlsafe(24),
            "SWITCHYARD_CONNECTOR_BASE_URL": emulator_url,
            "SWITCHYARD_INGRESS_PORT": str(port),
            "SWITCHYARD_PUBLIC_URL": ingress_url,
        }
        from .topics import apply_topics

        _say("switchyard: creating topics")
        await apply_topics(load_settings(child_env))
        supervisor = Supervisor(child_env, state_dir / "logs")
        _say(f"switchyard: starting API emulators on {emulator_url}")
        supervisor.start("emulators", ["emulators", "--host", "127.0.0.1", "--port", str(emulator_port)])
        _say("switchyard: starting router and worker pools: " + ", ".join(connectors))
        supervisor.start("router", ["router"])
        for connector in connectors:
            supervisor.start(f"worker-{connector}", ["worker", "--connector", connector])
        _say(f"switchyard: starting ingress on {ingress_url}")
        supervisor.start("ingress", ["ingress"])
        await _wait_http(f"{emulator_url}/_emulator/calls", 60, "emulators", supervisor)
        tenants = demo_tenants(emulator_url)
        keys = await _provision(child_env, tenants, emulator_url)
        await _wait_http(f"{ingress_url}/readyz", 90, "ingress", supervisor)
        _say("switchyard: sending the daily summary for each demo tenant through MCP")
        all_ok = await _demo(ingress_url, keys, tenants)
        config_path = state_dir / "mcp-clients.json"
        from core.jsonutil import dumps

        _write_private(config_path, dumps(_client_configs(ingress_url, keys, tenants)) + b"\n")
        _say(f"\nMCP client configurations (Cursor / Claude Desktop `mcpServers`): {config_path}")
        _say("  Paste one entry into ~/.cursor/mcp.json or claude_desktop_config.json; it holds the tenant's API key.")
        _say(f"  MCP endpoint: {ingress_url}/mcp/<space>   REST: {ingress_url}/v1/commands   "
             f"OpenAPI: {ingress_url}/openapi.json")
        _say(f"  Logs: {state_dir / 'logs'}   Stack env: {stack.env_file}")
        if args.once:
            return 0 if all_ok else 1
        _say("\nswitchyard: serving. Press Ctrl-C to stop everything.")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=2)
            except TimeoutError:
                if supervisor.dead():
                    _say(f"switchyard: {', '.join(supervisor.dead())} exited; see {state_dir / 'logs'}")
                    return 1
        return 0

    try:
        return asyncio.run(main())
    except Exception as exc:  # top level of the command: one clear line, details in the logs
        print(f"switchyard run: {exc}", file=sys.stderr)
        return 1
    finally:
        _say("switchyard: stopping")
        if supervisor is not None:
            supervisor.stop_all()
        stack.down()
        _say("switchyard: stopped; no process left behind")
