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
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from core.settings import load_settings
from schemas import CONNECTORS

from .demo import DemoTenant, demo_tenants
from .system import LocalSystem, StartStopped

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="exit after the demo (0 only if all succeeded)")
    parser.add_argument("--port", type=int, default=8080, help="ingress port (default 8080; 0 = any free)")
    parser.add_argument("--state-dir", type=Path, default=None, help="default: <home>/run")
    parser.add_argument("--connectors", default=",".join(CONNECTORS), help="worker pools to start")


def _say(line: str) -> None:
    print(line, flush=True)


def _client_configs(ingress_url: str, keys: dict[str, str], tenants: list[DemoTenant]) -> dict[str, Any]:
    """Two ``mcpServers`` entries per tenant: ``switchyard-<tenant>`` (url and headers, as
    Cursor and other clients of remote servers read it) and ``switchyard-<tenant>-stdio``
    (Claude Desktop's config starts local servers only: the ``mcp-remote`` bridge, run
    with npx, carries the calls to the URL with the key's header)."""
    servers: dict[str, Any] = {}
    for t in tenants:
        url, auth = f"{ingress_url}/mcp/{t.space_id}", f"Bearer {keys[t.tenant_id]}"
        servers[f"switchyard-{t.tenant_id}"] = {"url": url, "headers": {"Authorization": auth}}
        servers[f"switchyard-{t.tenant_id}-stdio"] = {
            "command": "npx",
            "args": [
                "-y", "mcp-remote", url, "--header", "Authorization:${SWITCHYARD_AUTH}",
                *(["--allow-http"] if url.startswith("http:") else []),
            ],
            "env": {"SWITCHYARD_AUTH": auth},
        }
    return {"mcpServers": servers}


def _previous_keys(path: Path) -> dict[str, str]:
    """The API keys a previous run wrote into its client configurations, per tenant."""
    try:
        servers = orjson.loads(path.read_bytes())["mcpServers"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return {}
    keys = {}
    for name, entry in servers.items() if isinstance(servers, dict) else ():
        headers = entry.get("headers") if isinstance(entry, dict) else None
        header = headers.get("Authorization", "") if isinstance(headers, dict) else ""
        if name.startswith("switchyard-") and isinstance(header, str) and header.startswith("Bearer "):
            keys[name.removeprefix("switchyard-")] = header.removeprefix("Bearer ")
    return keys


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` readable by its owner only, even where a wider file stood."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


async def _demo(ingress_url: str, keys: dict[str, str], tenants: list[DemoTenant]) -> bool:
    from ._demo_client import call_daily_summary, format_trace

    all_ok = True
    for tenant in tenants:
        try:
            outcome = await call_daily_summary(
                f"{ingress_url}/mcp/{tenant.space_id}",
                keys[tenant.tenant_id],
                summary=f"{tenant.tenant_id}: 42 tickets closed, 3 incidents resolved",
            )
        except Exception as exc:  # one tenant's failure is reported; the others still run
            all_ok = False
            _say(f"  [ERR] tenant {tenant.tenant_id:6} → the MCP call failed: {_cause(exc)}")
            continue
        all_ok &= outcome.ok
        mark = "ok " if outcome.ok else "ERR"
        _say(
            f"  [{mark}] tenant {tenant.tenant_id:6} → {outcome.connector}.{outcome.operation}"
            f"  command {outcome.command_id}  tools: {', '.join(outcome.tools)}"
        )
        _say(f"        result: {outcome.summary}")
        for line in format_trace(outcome.spans):
            _say(f"        {line}")
    return all_ok


def _cause(exc: BaseException) -> str:
    """One line for ``exc``: the innermost of an exception group (the MCP client's task
    group wraps what went wrong)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# Ctrl-C, kill, and the terminal closing.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run(args: argparse.Namespace) -> int:
    from core.logs import configure_logging

    configure_logging("switchyard-run", "WARNING")
    if importlib.util.find_spec("mcp") is None:  # found now, not after minutes of start-up
        print("switchyard run: the demo's MCP client is missing: pip install 'switchyard[demo]' "
              "(scripts/run.sh installs it)", file=sys.stderr)
        return 1
    # While the broker starts, aiokafka logs every refused connection at ERROR; the
    # progress lines already say what is being waited for.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    state_dir = args.state_dir or load_settings().home / "run"
    connectors = tuple(c for c in args.connectors.split(",") if c)
    system = LocalSystem(
        state_dir, connectors=connectors, port=args.port, progress=lambda line: _say(f"switchyard: {line}")
    )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def asked_to_stop() -> None:
            if not stop.is_set():
                _say("switchyard: stopping once the step under way ends (Ctrl-C again does not cut it short)")
            stop.set()

        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, asked_to_stop)
        try:
            await system.start(stop)
        except StartStopped:
            return 130
        if stop.is_set():
            return 130
        # Only the demo tenants whose app has a pool here (--connectors): the others'
        # calls would wait out their timeout and fail the run.
        tenants = [t for t in demo_tenants(system.emulator_url) if t.connector in connectors]
        if not tenants:
            _say(f"switchyard: no demo tenant uses {', '.join(connectors) or 'no connector'}; no demo sent")
        config_path = state_dir / "mcp-clients.json"
        # The keys of the last run, published again: a configuration pasted into a client
        # keeps working across restarts (the file is this machine's user's only).
        keys = await system.provision(tenants, reuse=_previous_keys(config_path))
        if stop.is_set():
            return 130
        _say("switchyard: sending the daily summary for each demo tenant through MCP (official SDK client)")
        all_ok = await _demo(system.ingress_url, keys, tenants)
        configs = _client_configs(system.ingress_url, keys, tenants)
        _write_private(config_path, orjson.dumps(configs, option=orjson.OPT_INDENT_2) + b"\n")
        url = system.ingress_url
        _say(f"\nMCP client configurations (`mcpServers`, one pair per tenant; each holds its API key): {config_path}")
        _say("  Cursor: paste a `switchyard-<tenant>` entry (url and headers) into ~/.cursor/mcp.json.")
        _say("  Claude Desktop: paste a `switchyard-<tenant>-stdio` entry into claude_desktop_config.json")
        _say("    (it starts local servers only: the entry runs the mcp-remote bridge with npx, Node.js 18+).")
        _say(f"  Claude Code: claude mcp add --transport http switchyard {url}/mcp/main --header \"Authorization: Bearer <key>\"")
        _say("  The keys stay the same across runs on this state directory (the data does not: a fresh Kafka and OpenBao each start).")
        _say(f"  MCP endpoint: {url}/mcp/<space>   REST: {url}/v1/commands   OpenAPI: {url}/openapi.json")
        _say(f"  Dashboard: {url}/dashboard   Logs: {system.log_dir}")
        if system.stack is not None:
            _say(f"  Admin API token (workspaces, API keys, credentials): SWITCHYARD_ADMIN_TOKEN in {system.stack.env_file}")
        _say("  Prometheus metrics (per tenant, workspace and connector):")
        for name, metrics_url in system.metrics_urls.items():
            _say(f"    {name:16} {metrics_url}")
        if system.stack is not None:
            # What a worker started by hand needs besides the stack (README "Scaling on one machine").
            _say("  Another worker by hand (here Slack's; the API emulators stand in for the SaaS APIs):")
            _say(f"    set -a; . {system.stack.env_file}; set +a")
            _say(f"    SWITCHYARD_CONNECTOR_BASE_URL={system.emulator_url} switchyard worker --connector slack")
        if stop.is_set():  # Ctrl-C while the demo ran
            return 130
        if args.once:
            return 0 if all_ok else 1
        _say("\nswitchyard: serving. Press Ctrl-C to stop everything.")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=2)
            except TimeoutError:
                assert system.supervisor is not None
                for name in system.supervisor.revive():
                    _say(f"switchyard: {name} exited and was restarted; see {system.log_dir}")
                # Kafka or OpenBao gone: nothing works without them (a dev OpenBao has
                # forgotten every credential), so everything stops, and says why.
                gone = system.stack.dead() if system.stack is not None else []
                if gone:
                    _say(f"switchyard: {', '.join(gone)} of the local stack exited; see {system.state_dir / 'stack'}")
                    return 1
        return 0

    try:
        return asyncio.run(main())
    except Exception as exc:  # top level of the command: one clear line, details in the logs
        print(f"switchyard run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        # Stopping takes a while (each process, then Kafka): a second Ctrl-C, a SIGTERM or
        # a closed terminal must not cut it short and leave the children running.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
        try:
            _say("switchyard: stopping")
            system.stop()
            _say("switchyard: stopped; no process left behind")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
