"""Local API emulators: one aiohttp app standing in for every vendor the connectors call.

Checks each tenant's token, records calls (never tokens), counts side effects per
idempotency key and injects faults on request, so the whole system runs offline.
Run it with ``switchyard emulators --port 8900``.
"""

from ._state import FAULT_KINDS, EmulatorState, Fault, Grant
from .app import STATE_KEY, make_app
from .testing import RunningEmulator, run_emulator

__all__ = [
    "FAULT_KINDS",
    "STATE_KEY",
    "EmulatorState",
    "Fault",
    "Grant",
    "RunningEmulator",
    "make_app",
    "run_emulator",
]
