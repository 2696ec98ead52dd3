"""Parking decisions and held records (pure logic, no Kafka)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition

from schemas import Headers
from workers._holding import Holding
from workers._overflow import NEXT_TIER_HEADER, PARKED, Overflow


def test_a_tenant_is_over_the_backlog_at_its_limit_and_returning_records_at_twice_that():
    overflow = Overflow("t.parked.echo", backlog=4)
    assert not overflow.over(3)
    assert overflow.over(4)
    assert not overflow.over(7, returning=True)
    assert overflow.over(8, returning=True)
    with pytest.raises(ValueError):
        Overflow("t", backlog=0)


def test_parked_record_keeps_value_key_and_trace_headers_and_goes_to_tier_zero_on_failure():
    overflow = Overflow("t.parked.echo", backlog=4)
    headers = [("traceparent", b"00-abc-def-01"), (Headers.KIND, b"routed"), (Headers.TENANT, b"a")]
    record = overflow.park(b"a", b"{body}", headers)

    assert (record.topic, record.key, record.value) == ("t.parked.echo", b"a", b"{body}")
    got = dict(record.headers)
    assert got["traceparent"] == b"00-abc-def-01" and got[Headers.TENANT] == b"a"
    assert got[Headers.KIND] == PARKED.encode() and got[NEXT_TIER_HEADER] == b"0"
    assert [k for k, _ in record.headers].count(Headers.KIND) == 1
    assert overflow.parked == 1
    as_read = {k: v.decode() for k, v in record.headers}
    assert Overflow.next_tier(as_read) == 0
    assert Overflow.next_tier({Headers.KIND: "retry"}) is None


@dataclass(frozen=True)
class _Item:
    tp: TopicPartition
    n: int


def test_holding_pauses_a_partition_at_its_limit_and_resumes_below_half():
    paused: list[TopicPartition] = []
    resumed: list[TopicPartition] = []
    holding: Holding[_Item] = Holding(limit=4, pause=paused.append, resume=resumed.append)
    tp, other = TopicPartition("r", 0), TopicPartition("r", 1)
    for n in range(4):
        holding.for_room("a", _Item(tp, n))
    holding.until(_Item(other, 9), due=100.0, tenant="b")
    assert paused == [tp] and holding.paused == {tp}
    taken = [holding.take_waiting("a") for _ in range(3)]
    assert [i.n for i in taken if i] == [0, 1, 2]  # first in, first out
    assert resumed == [tp] and not holding.paused
    assert holding.due(99.0) == [] and [i.n for i in holding.due(100.0)] == [9]
    assert len(holding) == 1 and holding.waiting("a")


def test_holding_releases_chosen_timed_records_before_they_are_due_and_recounts():
    resumed: list[TopicPartition] = []
    holding: Holding[_Item] = Holding(limit=2, pause=lambda tp: None, resume=resumed.append)
    tp = TopicPartition("r", 0)
    holding.until(_Item(tp, 1), due=50.0, tenant="a")
    holding.until(_Item(tp, 2), due=60.0, tenant="a")
    assert holding.paused == {tp} and holding.timed(tp, "a") == 2
    assert holding.release(lambda item: item.n == 9) == []
    assert [i.n for i in holding.release(lambda item: item.n == 2)] == [2]
    assert holding.timed(tp, "a") == 1 and len(holding) == 1 and resumed == []  # not below half yet
    assert holding.next_due() == 50.0 and [i.n for i in holding.due(100.0)] == [1]
    assert holding.timed(tp, "a") == 0 and len(holding) == 0 and resumed == [tp]


def test_holding_drop_forgets_records_of_revoked_partitions_only():
    holding: Holding[_Item] = Holding(limit=2, pause=lambda tp: None, resume=lambda tp: None)
    tp, other = TopicPartition("r", 0), TopicPartition("r", 1)
    holding.for_room("a", _Item(tp, 1))
    holding.for_room("a", _Item(tp, 2))
    holding.for_room("b", _Item(other, 3))
    holding.until(_Item(tp, 4), due=1.0, tenant="a")
    third = TopicPartition("r", 2)
    holding.until(_Item(third, 5), due=9.0, tenant="a")
    assert holding.paused == {tp} and holding.timed(tp, "a") == holding.timed(third, "a") == 1
    assert holding.drop(lambda item: item.tp == tp) == 3
    assert holding.tenants_waiting() == ["b"] and len(holding) == 2 and not holding.paused
    assert holding.timed(tp, "a") == 0 and holding.timed(third, "a") == 1
    assert holding.due(2.0) == []
    assert [i.n for i in holding.due(9.0)] == [5] and holding.timed(third, "a") == 0
