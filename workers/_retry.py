"""Retry decisions: in-process backoff, then retry tier topics, then the dead-letter topic.

A failed attempt first gets a few short in-process retries (full-jitter exponential
backoff, honouring ``Retry-After`` when it fits in the in-process bound); then the
command is handed to the next retry tier topic with ``not_before`` set, so no partition
waits for it; after the last tier it is dead-lettered. Nothing is retried past the
command's deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from schemas import RETRY_TIERS

__all__ = ["Decision", "RetryPolicy", "Step", "backoff", "decide"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of in-process retries and the delays of the retry tiers.

    ``tier_delays`` may be shorter than :data:`schemas.RETRY_TIERS` (tests use fractions
    of a second) but has at most as many entries: each tier has its own topic.
    """

    in_process_attempts: int = 2
    base_delay: float = 0.1
    max_delay: float = 2.0
    tier_delays: tuple[float, ...] = tuple(float(d) for d in RETRY_TIERS)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.in_process_attempts < 1:
            raise ValueError("in_process_attempts must be >= 1")
        if len(self.tier_delays) > len(RETRY_TIERS):
            raise ValueError(f"at most {len(RETRY_TIERS)} retry tiers (one topic each)")


def backoff(policy: RetryPolicy, failures: int, retry_after: float | None) -> float | None:
    """Wait before in-process retry number ``failures`` (1-based), or None: do not wait here.

    Full jitter (uniform in [0, base * 2**(failures-1)], capped) spreads the retries of many
    commands hitting the same rate limit; a ``Retry-After`` is a floor. When the floor is
    beyond ``max_delay`` the retry belongs to a tier, not to a worker slot.
    """
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** max(0, failures - 1)))
    delay = policy.rng.uniform(0.0, ceiling)
    if retry_after is not None:
        if retry_after > policy.max_delay:
            return None
        delay = max(delay, retry_after)
    return delay


class Step(Enum):
    RETRY_NOW = "retry_now"
    TIER = "tier"
    DEAD_LETTER = "dead_letter"
    EXPIRED = "expired"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    delay: float = 0.0
    tier: int | None = None
    not_before: datetime | None = None


def decide(
    policy: RetryPolicy,
    *,
    retryable: bool,
    retry_after: float | None,
    failures_here: int,
    next_tier: int,
    now: datetime,
    deadline: datetime,
    in_process: bool = True,
) -> Decision:
    """What to do after a failed attempt.

    Args:
        failures_here: failed attempts so far in this delivery (in-process).
        next_tier: index of the tier this command would go to next (0 for a first
            delivery, ``i + 1`` for a record read from tier ``i``).
        in_process: False when in-process retries make no sense (circuit open).
    """
    if not retryable:
        return Decision(Step.FAIL)
    if now >= deadline:
        return Decision(Step.EXPIRED)
    if in_process and failures_here < policy.in_process_attempts:
        delay = backoff(policy, failures_here, retry_after)
        if delay is not None and now + timedelta(seconds=delay) < deadline:
            return Decision(Step.RETRY_NOW, delay=delay)
    if next_tier >= len(policy.tier_delays):
        return Decision(Step.DEAD_LETTER)
    wait = max(policy.tier_delays[next_tier], retry_after or 0.0)
    not_before = now + timedelta(seconds=wait)
    if not_before >= deadline:
        # The next attempt could only start after the deadline: give up now, not later.
        return Decision(Step.EXPIRED)
    return Decision(Step.TIER, tier=next_tier, not_before=not_before)
