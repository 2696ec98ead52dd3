"""Every process runs on uvloop unless SWITCHYARD_EVENT_LOOP says asyncio."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from core.settings import load_settings


def test_uvloop_is_the_default_and_asyncio_can_be_chosen() -> None:
    assert load_settings({}).event_loop == "uvloop"
    assert load_settings({"SWITCHYARD_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(ValidationError):
        load_settings({"SWITCHYARD_EVENT_LOOP": "trio"})


def test_the_choice_decides_the_loop_that_asyncio_run_creates() -> None:
    # In a fresh interpreter: the test session's own loop policy stays untouched.
    probe = (
        "import asyncio, sys\n"
        "from core.event_loop import use_event_loop\n"
        "print(use_event_loop(sys.argv[1]), type(asyncio.new_event_loop()).__module__)\n"
        "async def main(): return type(asyncio.get_running_loop()).__module__\n"
        "print(asyncio.run(main()))\n"
    )
    for choice, module in (("uvloop", "uvloop"), ("asyncio", "asyncio.unix_events")):
        out = subprocess.run(
            [sys.executable, "-c", probe, choice], capture_output=True, text=True, check=True
        ).stdout.split()
        assert out == [choice, module, module]
