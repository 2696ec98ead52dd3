"""Run the emulator inside a test or benchmark on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from ._state import EmulatorState
from .app import make_app

__all__ = ["RunningEmulator", "emulator_control", "run_emulator"]


@dataclass(frozen=True, slots=True)
class RunningEmulator:
    base_url: str
    host: str
    port: int
    state: EmulatorState


@asynccontextmanager
async def run_emulator(
    state: EmulatorState | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on the running loop until the block exits (port 0: any free).

    ``shutdown_timeout`` bounds how long exit waits for handlers still sleeping in a
    latency fault whose client already gave up.
    """
    state = state or EmulatorState()
    runner = web.AppRunner(make_app(state), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        yield RunningEmulator(f"http://{host}:{bound}", host, bound, state)
    finally:
        await runner.cleanup()


async def emulator_control(
    session: aiohttp.ClientSession, emulator_url: str, path: str, body: dict[str, Any]
) -> None:
    """POST to the emulators' control API (``/_emulator/faults``, ``/_emulator/reset``, ...).

    Raises:
        RuntimeError: the emulators refused, with their answer.
    """
    async with session.post(f"{emulator_url}/_emulator/{path}", json=body) as response:
        if response.status != 200:
            answer = (await response.text())[:300]
            raise RuntimeError(f"emulator {path}: HTTP {response.status}: {answer}")
