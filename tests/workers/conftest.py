"""Fixtures shared by the connector and emulator tests: a fresh emulator, an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from workers.emulators import EmulatorState, RunningEmulator, run_emulator


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """The SaaS API emulators on a free loopback port, with empty state."""
    async with run_emulator(EmulatorState()) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
