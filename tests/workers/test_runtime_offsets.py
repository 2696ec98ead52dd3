"""Offset tracking: commit only up to the lowest unfinished record; remember what finished above."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from workers._offsets import OffsetTracker, decode_done, encode_done

TP = TopicPartition("t", 0)


def test_position_stops_at_the_lowest_unfinished_record():
    tracker = OffsetTracker()
    gens = {o: tracker.track(TP, o) for o in range(5)}
    for offset in (0, 1, 3, 4):
        assert tracker.finish(TP, offset, gens[offset])
    (position, metadata) = tracker.committable()[TP]
    assert position == 2
    assert decode_done(position, metadata) == (5, set())  # the position itself is implied
    tracker.finish(TP, 2, gens[2])
    assert tracker.committable()[TP] == (5, "")


def test_a_commit_passes_the_control_records_the_consumer_moved_over():
    tracker = OffsetTracker()
    gens = {o: tracker.track(TP, o) for o in range(5)}  # offset 5: a transaction's marker
    tracker.advance(TP, 6)
    for offset in (0, 1, 3, 4):
        tracker.finish(TP, offset, gens[offset])
    assert tracker.committable()[TP][0] == 2  # an unfinished record still holds it
    tracker.finish(TP, 2, gens[2])
    assert tracker.committable()[TP] == (6, "")
    tracker.advance(TP, 4)  # never back
    assert tracker.committable()[TP] == (6, "")
    never_read = TopicPartition("t", 1)
    tracker.advance(never_read, 9)  # nothing of ours read there: nothing to commit
    assert never_read not in tracker.committable()


def test_nothing_to_commit_when_unchanged_since_last_commit():
    tracker = OffsetTracker()
    gen = tracker.track(TP, 0)
    tracker.finish(TP, 0, gen)
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}


def test_finishes_after_revocation_are_ignored():
    tracker = OffsetTracker()
    gen = tracker.track(TP, 7)
    tracker.forget([TP])
    assert not tracker.finish(TP, 7, gen)
    assert not tracker.is_current(TP, gen)
    assert tracker.track(TP, 7) != gen


def test_a_new_owner_skips_records_the_previous_owner_finished():
    previous = OffsetTracker()
    gens = {o: previous.track(TP, o) for o in range(10, 20)}
    for offset in range(10, 20):
        if offset not in (10, 14):
            previous.finish(TP, offset, gens[offset])
    position, metadata = previous.committable()[TP]
    assert position == 10

    owner = OffsetTracker()
    assert owner.restore(TP, position, metadata) == 8
    kept = [o for o in range(10, 22) if owner.track(TP, o) is not None]
    assert kept == [10, 14, 20, 21]


def test_a_restored_done_set_survives_a_commit_made_before_it_was_refetched():
    owner = OffsetTracker()
    owner.restore(TP, 10, encode_done(10, 20, {10, 15}))
    gen = owner.track(TP, 10)
    owner.finish(TP, 10, gen)
    position, metadata = owner.committable()[TP]
    third = OffsetTracker()
    third.restore(TP, position, metadata)
    assert [o for o in range(10, 21) if third.track(TP, o) is not None] == [15, 20]


def test_oversized_done_sets_are_truncated_safely():
    pending = set(range(0, 10_000, 2))
    metadata = encode_done(0, 10_000, pending, limit=200)
    assert len(metadata) <= 200
    horizon, still = decode_done(0, metadata)
    # Everything claimed done below the horizon really is done.
    assert all(o in still or o == 0 or o not in pending for o in range(horizon))
    assert horizon < 10_000


@given(st.sets(st.integers(min_value=1, max_value=500)), st.integers(min_value=0, max_value=100))
def test_done_metadata_round_trips(pending, extra):
    position = 0
    horizon = max(pending | {0}) + 1 + extra
    decoded = decode_done(position, encode_done(position, horizon, pending | {position}))
    assert decoded == (horizon, pending)


def test_foreign_metadata_is_ignored():
    assert decode_done(5, "something else") is None
    assert OffsetTracker().restore(TP, 5, "") == 0


def test_a_commit_without_metadata_still_marks_everything_below_it_done():
    # A consumer may have started below a commit that was pending when it read its start
    # (a stalled owner's open transaction): the stable commit, restored, skips the rest.
    owner = OffsetTracker()
    owner.restore(TP, 5, "")
    assert [o for o in range(3, 8) if owner.track(TP, o) is not None] == [5, 6, 7]
