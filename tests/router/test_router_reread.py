"""After every rebalance the router re-reads once from the committed offsets.

faust's recovery resumes its flow control after seeking to the committed offsets, and
that resume clears the stream's queue: a command fetched during the seek can be dropped
there with its position already past it (``Router.reread_after_rebalance``). Pure
logic here: the real app wiring and the real ``recover_skipped``; the consumer is a
recorder of seeks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import load_settings
from router.app import create_app


class _Consumer:
    def __init__(self) -> None:
        self.seeks = 0

    async def perform_seek(self) -> None:
        self.seeks += 1


async def test_the_end_of_a_rebalance_asks_for_one_reread_once_the_flow_is_on(
    tmp_path: Path,
) -> None:
    settings = load_settings({}, topic_prefix="reread.")
    app, runtime = create_app(settings, data_dir=tmp_path)
    router = runtime.router
    consumer: Any = _Consumer()

    await router.recover_skipped(consumer, flow_active=True)
    assert consumer.seeks == 0  # nothing asked for

    app.on_rebalance_end()  # what faust's recovery calls after resuming the flow
    await router.recover_skipped(consumer, flow_active=False)
    assert consumer.seeks == 0  # not while the flow is suspended: faust would drop it again
    await router.recover_skipped(consumer, flow_active=True)
    assert consumer.seeks == 1
    await router.recover_skipped(consumer, flow_active=True)
    assert consumer.seeks == 1  # once per rebalance
