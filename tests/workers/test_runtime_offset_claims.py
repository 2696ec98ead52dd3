"""Commits whose done-sets do not fit the metadata limit claim less, never take a claim
back, and never claim a record that did not finish.

A model of the outbox drives the tracker: records are fetched, finish in any order,
commits succeed or fail. A record's Result is published only with a commit that claims
it. After every commit, what a next owner would skip (decoded from the metadata) must
include every published record and no unfinished one.
"""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from workers._offsets import OffsetTracker, decode_done, encode_done

TP = TopicPartition("t", 0)
LIMIT = 40  # "sy1:" + 12 for the horizon leaves room for a few runs only

fetch = st.tuples(st.just("fetch"), st.integers(1, 40))
finish = st.tuples(st.just("finish"), st.integers(0, 10_000))
commit = st.tuples(st.just("commit"), st.booleans())


def skipped_by_next_owner(position: int, metadata: str, below: int) -> set[int]:
    """Offsets under ``below`` a new owner restoring this commit would not run."""
    owner = OffsetTracker()
    owner.restore(TP, position, metadata)
    return {o for o in range(below) if o < position or owner.track(TP, o) is None}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(fetch, finish, finish, commit), min_size=1, max_size=200))
def test_claims_grow_cover_every_published_result_and_only_finished_records(ops) -> None:
    tracker = OffsetTracker(metadata_limit=LIMIT)
    fetched = 0
    unfinished: list[int] = []
    generation = 0
    published: set[int] = set()
    skipped: set[int] = set()
    for op, arg in ops:
        if op == "fetch":
            for offset in range(fetched, fetched + arg):
                generation = tracker.track(TP, offset)
                unfinished.append(offset)
            fetched += arg
        elif op == "finish" and unfinished:
            offset = unfinished.pop(arg % len(unfinished))
            assert tracker.finish(TP, offset, generation)
        elif op == "commit":
            offsets = tracker.committable()
            released = {o for o in range(fetched) if TP in offsets and tracker.claims(TP, o)}
            if not arg or TP not in offsets:
                continue  # a failed transaction: nothing published, nothing committed
            tracker.mark_committed(offsets)
            published |= released
            position, metadata = offsets[TP]
            assert len(metadata) <= LIMIT
            now_skipped = skipped_by_next_owner(position, metadata, fetched)
            assert published <= now_skipped  # no published Result is redone
            assert not now_skipped & set(unfinished)  # no unfinished record is dropped
            assert skipped <= now_skipped  # a claim is never taken back
            skipped = now_skipped


def test_scattered_finishes_past_the_limit_wait_instead_of_lowering_the_claim() -> None:
    tracker = OffsetTracker(metadata_limit=LIMIT)
    gens = {o: tracker.track(TP, o) for o in range(60)}
    for offset in range(1, 60, 2):  # 0, 2, 4, ... stay unfinished: too many gaps to list
        tracker.finish(TP, offset, gens[offset])
    offsets = tracker.committable()
    position, metadata = offsets[TP]
    horizon, _ = decode_done(position, metadata)
    assert 0 < horizon < 60
    assert [o for o in range(60) if tracker.claims(TP, o)] == list(range(1, horizon, 2))
    tracker.mark_committed(offsets)
    # The rest are claimed once the gaps below them close.
    for offset in range(0, 60, 2):
        tracker.finish(TP, offset, gens[offset])
    offsets = tracker.committable()
    assert offsets[TP] == (60, "")
    held_until_now = {o for o in range(1, 60, 2) if o >= horizon}
    assert {o for o in range(60) if tracker.claims(TP, o)} == set(range(0, 60, 2)) | held_until_now


def test_encode_done_still_fits_the_limit() -> None:
    assert len(encode_done(0, 10_000, set(range(0, 10_000, 2)), limit=200)) <= 200


def test_a_finish_that_splits_a_listed_run_past_the_limit_does_not_take_a_claim_back() -> None:
    tracker = OffsetTracker(metadata_limit=LIMIT)
    gens = {o: tracker.track(TP, o) for o in range(200)}
    unfinished = {0, *range(10, 100), 120, 140, 160}
    for offset in set(range(200)) - unfinished:
        tracker.finish(TP, offset, gens[offset])
    offsets = tracker.committable()
    assert decode_done(*offsets[TP])[0] == 200  # runs 10-99, 120, 140, 160 fit
    tracker.mark_committed(offsets)

    # Two finishes split 10-99 into three runs: listed that way they no longer fit, and
    # the claim would stop at 140, taking back 141..199 whose Results are out.
    tracker.finish(TP, 50, gens[50])
    tracker.finish(TP, 70, gens[70])
    assert tracker.committable() == {}  # nothing that fits would claim more
    assert not tracker.claims(TP, 50) and not tracker.claims(TP, 70)

    tracker.finish(TP, 0, gens[0])
    offsets = tracker.committable()
    position, metadata = offsets[TP]
    assert position == 10 and decode_done(position, metadata)[0] == 200
    assert tracker.claims(TP, 0) and not tracker.claims(TP, 50)
