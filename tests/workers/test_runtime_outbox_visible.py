"""Outbox.wait_visible: a partition is handed over only once its committed offset reads back."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition

from workers._outbox import Outbox

TP = TopicPartition("t", 0)


class LaggingAdmin:
    """Answers the previous offset ``lag`` times (commit markers not yet written), then the new one."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.calls = 0

    async def list_consumer_group_offsets(self, group_id, partitions):
        self.calls += 1
        offset = 9 if self.calls <= self.lag else 10
        return {tp: SimpleNamespace(offset=offset) for tp in partitions}


def _outbox_that_committed_10() -> Outbox:
    outbox = Outbox(producer=None, tracker=None, group_id="g")  # type: ignore[arg-type]
    outbox._committed[TP] = 10  # what flush() records after a commit
    return outbox


async def test_handover_waits_until_the_committed_offset_reads_back() -> None:
    admin = LaggingAdmin(lag=2)
    assert await _outbox_that_committed_10().wait_visible(admin, [TP], within=5.0) is True
    assert admin.calls == 3


async def test_handover_gives_up_after_the_bound_and_says_so() -> None:
    admin = LaggingAdmin(lag=10_000)
    assert await _outbox_that_committed_10().wait_visible(admin, [TP], within=0.05) is False
    assert 1 <= admin.calls < 10_000


async def test_partitions_this_process_never_committed_are_not_waited_for() -> None:
    admin = LaggingAdmin(lag=10_000)
    outbox = _outbox_that_committed_10()
    assert await outbox.wait_visible(admin, [TopicPartition("t", 1)], within=5.0) is True
    assert admin.calls == 0
