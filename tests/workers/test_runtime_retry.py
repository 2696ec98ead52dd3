"""Retry decisions: bounded jittered backoff, Retry-After, tiers, dead letters, deadlines."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers._retry import RetryPolicy, Step, backoff, decide

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(minutes=10)


def policy(**kw) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(1), tier_delays=(0.2, 0.5), **kw)


@given(st.integers(min_value=1, max_value=50), st.one_of(st.none(), st.floats(min_value=0, max_value=2)))
def test_backoff_is_bounded_and_honours_retry_after(failures, retry_after):
    delay = backoff(policy(), failures, retry_after)
    assert delay is not None and 0 <= delay <= 2.0
    if retry_after is not None:
        assert delay >= retry_after


def test_retry_after_beyond_the_in_process_bound_goes_to_a_tier():
    assert backoff(policy(), 1, 30.0) is None
    decision = decide(policy(), retryable=True, retry_after=30.0, failures_here=1, next_tier=0, now=NOW, deadline=LATER)
    assert decision.step is Step.TIER and decision.tier == 0
    assert decision.not_before == NOW + timedelta(seconds=30)


def test_in_process_retries_then_tiers_then_dead_letter():
    p = policy()
    kw = {"retryable": True, "retry_after": None, "now": NOW, "deadline": LATER}
    assert decide(p, failures_here=1, next_tier=0, **kw).step is Step.RETRY_NOW
    tier = decide(p, failures_here=2, next_tier=0, **kw)
    assert (tier.step, tier.tier, tier.not_before) == (Step.TIER, 0, NOW + timedelta(seconds=0.2))
    assert decide(p, failures_here=2, next_tier=1, **kw).tier == 1
    assert decide(p, failures_here=2, next_tier=2, **kw).step is Step.DEAD_LETTER


def test_non_retryable_errors_fail_at_once():
    assert decide(policy(), retryable=False, retry_after=None, failures_here=1, next_tier=0, now=NOW, deadline=LATER).step is Step.FAIL


def test_nothing_is_retried_past_the_deadline():
    soon = NOW + timedelta(seconds=0.1)
    d = decide(policy(), retryable=True, retry_after=None, failures_here=2, next_tier=0, now=NOW, deadline=soon)
    assert d.step is Step.EXPIRED
    assert decide(policy(), retryable=True, retry_after=None, failures_here=1, next_tier=0, now=soon, deadline=soon).step is Step.EXPIRED


def test_open_circuit_skips_in_process_retries():
    d = decide(policy(), retryable=True, retry_after=1.0, failures_here=0, next_tier=0, now=NOW, deadline=LATER, in_process=False)
    assert d.step is Step.TIER and d.not_before == NOW + timedelta(seconds=1.0)


def test_more_tiers_than_topics_is_refused():
    with pytest.raises(ValueError):
        RetryPolicy(tier_delays=(1, 2, 3, 4))
