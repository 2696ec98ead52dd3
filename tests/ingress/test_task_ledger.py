"""The ledger behind tasks/list and cancellations: bounded, first cancellation stands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingress.task_ledger import TaskLedger

T0 = datetime(2026, 11, 28, tzinfo=UTC)


def test_tasks_are_listed_newest_first_per_workspace():
    ledger = TaskLedger(100)
    ledger.created("acme", "main", "old", T0, 1_000)
    ledger.created("acme", "main", "new", T0 + timedelta(seconds=1), 1_000)
    ledger.created("acme", "other", "elsewhere", T0, 1_000)
    ledger.created("beta", "main", "foreign", T0, 1_000)
    assert ledger.get("acme", "main", "old") is not None  # reading does not reorder
    assert ledger.task_ids("acme", "main") == ["new", "old"]
    assert ledger.get("beta", "main", "old") is None


def test_the_first_cancellation_stands_and_a_late_creation_note_keeps_it():
    ledger = TaskLedger(10)
    ledger.created("acme", "main", "t", T0, 5_000)
    ledger.cancelled("acme", "main", "t", T0 + timedelta(seconds=1))
    ledger.cancelled("acme", "main", "t", T0 + timedelta(seconds=2))  # another replica's
    ledger.created("acme", "main", "t", T0, 5_000)  # the follower reads the command again
    entry = ledger.get("acme", "main", "t")
    assert entry is not None
    assert (entry.ttl_ms, entry.cancelled_at) == (5_000, T0 + timedelta(seconds=1))


def test_a_cancellation_of_a_forgotten_task_is_kept_and_memory_is_bounded():
    ledger = TaskLedger(30)  # a tenant holds at most a tenth: 3
    ledger.cancelled("acme", "main", "gone", T0)
    entry = ledger.get("acme", "main", "gone")
    assert entry is not None and entry.cancelled_at == T0 and entry.ttl_ms is None
    for n in range(10):
        ledger.created("acme", "main", f"t{n}", T0 + timedelta(seconds=n), 1)
    assert len(ledger) == 3
    assert ledger.task_ids("acme", "main") == ["t9", "t8", "t7"]


def test_one_tenants_flood_of_tasks_does_not_forget_anothers_tasks_or_cancellations():
    # One ledger serves every tenant; a tenant at 500 tasks/s filled it in 20 s, and a
    # forgotten cancelled task read "working" again.
    ledger = TaskLedger(100)
    ledger.created("acme", "main", "mine", T0, 60_000)
    ledger.cancelled("acme", "main", "mine", T0 + timedelta(seconds=1))
    for n in range(1_000):
        ledger.created("beta", "main", f"b{n}", T0 + timedelta(seconds=n), 60_000)
    entry = ledger.get("acme", "main", "mine")
    assert entry is not None and entry.cancelled_at == T0 + timedelta(seconds=1)
    assert len(ledger.task_ids("beta", "main")) == 10 and len(ledger) == 11
    # Past the capacity, over many tenants, the one noted least recently gives way.
    for n in range(200):
        ledger.created(f"t{n}", "main", "x", T0, 60_000)
    assert len(ledger) == 100 and ledger.get("t199", "main", "x") is not None
