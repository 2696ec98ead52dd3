"""Which dropped replays a replica looks up on the results topic (ingress.earlier)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from core.settings import load_settings
from ingress.earlier import EarlierResults
from ingress.results import ResultsFeed
from ingress.testing import echo_result
from schemas import Command, CommandSource


class _Feed:
    def __init__(self, known: set[str]) -> None:
        self.known = known

    def owner(self, command_id: str) -> Any:
        return ("acme", "main") if command_id in self.known else None

    def forgotten(self, command_id: str) -> Any:
        return None


def _earlier(known: set[str] = frozenset(), **kwargs: Any) -> EarlierResults:  # type: ignore[assignment]
    earlier = EarlierResults(load_settings({}), _Feed(set(known)), **kwargs)  # type: ignore[arg-type]
    earlier._partitions = 6
    return earlier


def _queued(earlier: EarlierResults) -> dict[int, tuple[int, set[str]]]:
    return earlier._queued


def test_only_a_replica_with_a_use_for_the_result_looks_it_up() -> None:
    earlier = _earlier()
    earlier.relevant = lambda command_id: command_id == "mine"
    earlier.wanted("acme", "theirs", 1_000)
    assert _queued(earlier) == {}
    earlier.wanted("acme", "mine", 2_000)
    earlier.wanted("acme", "mine", 1_500)  # told twice: one lookup, from the earlier time
    [(since, ids)] = _queued(earlier).values()
    assert since == 1_500 and ids == {"mine"}


def test_a_result_held_here_and_a_full_queue_are_not_looked_up() -> None:
    earlier = _earlier(known={"held"}, max_queued=2)
    for command_id in ("held", "a", "b", "c"):
        earlier.wanted("acme", command_id, 1_000)
    assert sum(len(ids) for _, ids in _queued(earlier).values()) == 2
    assert all("held" not in ids for _, ids in _queued(earlier).values())


def test_a_looked_up_result_is_not_counted_again_by_the_listeners() -> None:
    feed = ResultsFeed(load_settings({}))
    heard: list[str] = []
    feed.listeners.append(lambda head, raw: heard.append(head.command_id))
    now = datetime.now(UTC)
    command = Command(
        command_id="c1-looked-up", tenant_id="acme", space_id="main", user_id="u", role="member", action="echo",
        idempotency_key="k", submitted_at=now, deadline=now + timedelta(minutes=1), source=CommandSource.REST,
    )
    record = SimpleNamespace(value=echo_result(command).to_bytes(), partition=0, offset=0)
    feed.apply(record, listeners=False)
    assert feed.owner("c1-looked-up") == ("acme", "main") and heard == []
