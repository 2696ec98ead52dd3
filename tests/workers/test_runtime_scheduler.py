"""Fair scheduling: round-robin across tenants, per-tenant and global caps."""

from __future__ import annotations

import asyncio

import pytest

from workers._scheduler import FairScheduler


def drain(scheduler: FairScheduler[str]) -> list[str]:
    out = []
    while (taken := scheduler.take()) is not None:
        out.append(taken[1])
    return out


def test_tenants_take_turns_whatever_the_arrival_order():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=100, tenant_limit=100)
    for i in range(5):
        scheduler.push("flood", f"f{i}")
    scheduler.push("quiet", "q0")
    scheduler.push("other", "o0")
    assert drain(scheduler)[:4] == ["f0", "q0", "o0", "f1"]


def test_a_tenant_at_its_cap_does_not_block_others():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=100, tenant_limit=2)
    for i in range(10):
        scheduler.push("slow", f"s{i}")
    scheduler.push("fast", "x")
    assert sorted(drain(scheduler)) == ["s0", "s1", "x"]
    assert scheduler.running("slow") == 2 and scheduler.buffered == 8
    scheduler.release("slow")
    assert drain(scheduler) == ["s2"]


def test_global_cap_bounds_commands_in_flight():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=3, tenant_limit=10)
    for tenant in "abcde":
        scheduler.push(tenant, tenant)
    assert len(drain(scheduler)) == 3 and scheduler.in_flight == 3
    scheduler.release("a")
    assert drain(scheduler) == ["d"]


def test_drop_removes_only_matching_queued_items():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=1, tenant_limit=1)
    for item in ("a1", "a2", "b1"):
        scheduler.push(item[0], item)
    assert scheduler.take() == ("a", "a1")
    assert scheduler.drop(lambda item: item.startswith("b")) == ["b1"]
    assert scheduler.buffered == 1
    scheduler.release("a")
    assert drain(scheduler) == ["a2"]


async def test_next_waits_until_a_slot_frees():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=1, tenant_limit=1)
    scheduler.push("a", "1")
    scheduler.push("a", "2")
    assert await scheduler.next() == ("a", "1")
    waiter = asyncio.create_task(scheduler.next())
    await asyncio.sleep(0)
    assert not waiter.done()
    scheduler.release("a")
    async with asyncio.timeout(1):
        assert await waiter == ("a", "2")


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        FairScheduler(global_limit=0, tenant_limit=1)
