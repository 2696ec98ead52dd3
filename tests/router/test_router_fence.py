"""The rebalance fence (issue 8): a replica routes nothing it fetched before giving
partitions up, and gives them up only after its batch in flight has ended.

Pure logic: real faust messages and the real ``Router.handle_batch`` entry; the Kafka
half of a batch (``Router._handle_live``) is replaced by a recorder. The whole story
under load, with real rebalances, is ``tests/faults/test_scale_out.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from faust.types.tuples import Message

from core.settings import load_settings
from router._route import Router
from router.app import create_app

TOPIC = "fence.commands"


def _event(offset: int, generation: int, partition: int = 0) -> Any:
    message = Message(
        TOPIC, partition, offset, 0.0, 0, None, b"t", b"{}", None,
        tp=TP(TOPIC, partition), generation_id=generation,
    )  # fmt: skip
    return SimpleNamespace(message=message)


class _Recorder:
    """Stands in for the Kafka half of a batch; can hold a batch in flight."""

    def __init__(self) -> None:
        self.routed: list[int] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, events: list[Any]) -> None:
        self.entered.set()
        await self.release.wait()
        self.routed += [event.message.offset for event in events]


def _router(generation: int) -> tuple[Router, _Recorder, Any]:
    router = Router(load_settings({}), None, None, None)  # type: ignore[arg-type]
    recorder = _Recorder()
    router._handle_live = recorder  # type: ignore[method-assign]
    consumer = SimpleNamespace(app=SimpleNamespace(consumer_generation_id=generation))
    router.consumer = consumer
    return router, recorder, consumer


async def test_commands_fetched_before_a_rebalance_are_neither_routed_nor_committed() -> None:
    router, recorder, consumer = _router(generation=5)
    await router.handle_batch([_event(0, 5), _event(1, 5)])
    assert recorder.routed == [0, 1]

    # Partitions are being revoked: what generation 5 fetched belongs to the next owner.
    assert await router.fence.close(5, within=5)
    queued = [_event(2, 5), _event(3, 5)]
    await router.handle_batch(queued)
    assert recorder.routed == [0, 1]
    # Handled, so faust's later ack is a no-op: the offsets never become committable.
    assert all(event.message.acked for event in queued)
    assert not any(event.message.ack(consumer) for event in queued)

    # Assigned again (generation 6): leftovers of generation 5 still stay unrouted, and
    # what generation 6 fetched (re-read from the committed offset) is routed.
    consumer.app.consumer_generation_id = 6
    await router.handle_batch([_event(3, 5), _event(2, 6), _event(3, 6)])
    assert recorder.routed == [0, 1, 2, 3]
    assert router.fence.dropped == 3


async def test_giving_partitions_up_waits_for_the_batch_in_flight() -> None:
    router, recorder, _ = _router(generation=7)
    recorder.release.clear()
    batch = asyncio.create_task(router.handle_batch([_event(0, 7)]))
    async with asyncio.timeout(5):
        await recorder.entered.wait()
    closing = asyncio.create_task(router.fence.close(7, within=30))
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done, "the fence closed while a batch was still routing"
    recorder.release.set()
    async with asyncio.timeout(5):
        assert await closing
        await batch
    assert recorder.routed == [0]


async def test_a_batch_that_outlasts_the_bound_does_not_hold_the_rebalance_forever() -> None:
    router, recorder, _ = _router(generation=3)
    recorder.release.clear()
    batch = asyncio.create_task(router.handle_batch([_event(0, 3)]))
    async with asyncio.timeout(5):
        await recorder.entered.wait()
    assert await router.fence.close(3, within=0.05) is False
    recorder.release.set()
    async with asyncio.timeout(5):
        await batch


async def test_the_app_closes_the_fence_on_revocation_and_before_shutdown(tmp_path: Any) -> None:
    settings = load_settings({}, topic_prefix=f"fence{uuid.uuid4().hex[:6]}.")
    for signal in ("on_partitions_revoked", "on_before_shutdown"):
        app, runtime = create_app(settings, data_dir=tmp_path / signal)
        router = runtime.router
        app.consumer_generation_id = 9
        assert router.fence.split([_event(0, 9)], 9)[1] == []
        if signal == "on_partitions_revoked":
            await app.on_partitions_revoked.send(set())
        else:
            await app.on_before_shutdown.send()
        live, stale = router.fence.split([_event(1, 9)], 9)
        assert (live, len(stale)) == ([], 1), signal
