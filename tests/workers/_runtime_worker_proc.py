"""A worker pool process for the kill tests: the echo connector against the test's upstream.

Configuration comes from the environment (so the AppRole secret id is not on the command
line): the usual SWITCHYARD_* variables plus TEST_UPSTREAM_URL and TEST_INSTANCE_ID.
It runs through ``workers.command.serve``, the same signal handling as ``switchyard worker``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import aiohttp
from _runtime_support import CONNECTOR, EchoConnector

from core.logs import configure_logging
from core.settings import connector_env, load_settings
from core.vault import AppRoleCredentials, PoolVault
from workers._pool import PoolOptions, WorkerPool
from workers.command import serve


def main() -> int:
    settings = load_settings()
    configure_logging("worker-test", "DEBUG")
    upstream = os.environ["TEST_UPSTREAM_URL"]
    approle = AppRoleCredentials(
        role_id=connector_env(None, CONNECTOR, "SWITCHYARD_VAULT_ROLE_ID") or "",
        secret_id=connector_env(None, CONNECTOR, "SWITCHYARD_VAULT_SECRET_ID") or "",
    )

    async def refresh(session: aiohttp.ClientSession, creds: Mapping[str, Any]) -> Mapping[str, Any]:
        async with session.post(f"{upstream}/oauth/token", json={"tenant": creds.get("tenant")}) as response:
            response.raise_for_status()
            return dict(await response.json())

    async def run() -> int:
        vault = PoolVault(settings.vault_addr, CONNECTOR, approle)
        options = PoolOptions(
            tier_delays=(0.2, 0.5),
            concurrency=32,
            tenant_concurrency=8,
            shutdown_grace=5.0,
            instance_id=os.environ["TEST_INSTANCE_ID"],
        )
        pool = WorkerPool(settings, EchoConnector(), vault, options=options, refresher=refresh, base_url=upstream)
        return await serve(pool)

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
