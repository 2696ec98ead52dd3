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


def test_a_tenants_own_cap_below_the_process_cap_holds_and_is_forgotten_when_idle():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=100, tenant_limit=8)
    for i in range(5):
        scheduler.push("capped", f"c{i}", limit=2)
    scheduler.push("other", "o0", limit=50)  # above the process's cap: the process's holds
    assert sorted(drain(scheduler)) == ["c0", "c1", "o0"]
    assert scheduler.limit("capped") == 2 and scheduler.limit("other") == 8
    scheduler.release("capped")
    assert drain(scheduler) == ["c2"]
    for _ in range(2):
        scheduler.release("capped")
    assert drain(scheduler) == ["c3", "c4"]
    for _ in range(2):
        scheduler.release("capped")
    assert scheduler.limit("capped") == 8  # nothing queued or running: nothing kept


def test_the_latest_command_of_a_workspace_sets_its_cap():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=100, tenant_limit=8)
    scheduler.push("t", "a", limit=1, space="s")
    scheduler.push("t", "b")  # carries no cap (a router of before): the cap stays
    assert drain(scheduler) == ["a"]
    scheduler.push("t", "c", limit=3, space="s")  # the workspace was changed
    assert drain(scheduler) == ["b", "c"]


def test_a_busy_workspace_does_not_lift_a_siblings_lower_cap():
    scheduler: FairScheduler[str] = FairScheduler(global_limit=100, tenant_limit=8)
    for i in range(5):
        scheduler.push("t", f"fragile{i}", limit=1, space="fragile")
    scheduler.push("t", "other", limit=8, space="other")
    assert drain(scheduler) == ["fragile0"]
    assert scheduler.limit("t") == 1
