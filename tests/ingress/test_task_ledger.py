"""The ledger behind tasks/list and cancellations: bounded, first cancellation stands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingress.task_ledger import TaskLedger

T0 = datetime(2026, 11, 28, tzinfo=UTC)


def test_tasks_are_listed_newest_first_per_workspace():
    ledger = TaskLedger(10)
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
    ledger = TaskLedger(3)
    ledger.cancelled("acme", "main", "gone", T0)
    entry = ledger.get("acme", "main", "gone")
    assert entry is not None and entry.cancelled_at == T0 and entry.ttl_ms is None
    for n in range(10):
        ledger.created("acme", "main", f"t{n}", T0 + timedelta(seconds=n), 1)
    assert len(ledger) == 3
    assert ledger.task_ids("acme", "main") == ["t9", "t8", "t7"]
