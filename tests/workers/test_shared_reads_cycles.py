"""A failed shared read is freed by reference counting, for the reader and its waiters."""

from __future__ import annotations

import asyncio
import time

import pytest
from _cycles import CyclicGarbage

from core.errors import RetryableError
from schemas import ErrorCode
from workers.connectors._base import Doubt
from workers.connectors._shared_reads import Found, SharedReads


async def test_a_failed_read_leaves_no_reference_cycle_for_the_reader_or_a_waiter() -> None:
    reads = SharedReads()
    release = asyncio.Event()

    async def failing(_oldest: float) -> Found:
        await release.wait()
        raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, "listing the channel: 503")

    doubt = Doubt(since=time.time() - 5, settled_at=time.time() - 1)
    with CyclicGarbage() as waiting:
        reader = asyncio.create_task(reads.found("channel", doubt, failing))
        await asyncio.sleep(0)  # it starts the read
        release.set()
        with pytest.raises(RetryableError):
            await reads.found("channel", doubt, failing)  # waits for that read
        with pytest.raises(RetryableError):
            await reader
        del reader
    with CyclicGarbage() as reading:
        with pytest.raises(RetryableError):
            await reads.found("channel", doubt, failing)  # reads itself (failures are not kept)
    for left in (waiting, reading):
        assert "RetryableError" not in left.exceptions and "found" not in left.frames
