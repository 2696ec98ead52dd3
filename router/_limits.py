"""Usage limits of one workspace: a token bucket and a daily (UTC) quota (pure).

The state is a small JSON dict kept in the router's ``usage`` table, one per
(tenant, space), so it is changelogged and co-partitioned with the commands.
Only commands that would be routed are counted: a rejected command spends nothing.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from core.errors import RetryableError
from schemas import ErrorCode, Limits

__all__ = ["admit", "at_rest"]


_SECONDS_PER_DAY = 86_400


@lru_cache(maxsize=4)
def _day_name(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * _SECONDS_PER_DAY, UTC).strftime("%Y-%m-%d")


def _day(now: float) -> str:
    # Unix time has exactly 86,400 s per UTC day, so the day number names the date;
    # formatting it once per day instead of per command (strftime was a visible share
    # of the router's CPU).
    return _day_name(int(now // _SECONDS_PER_DAY))


def _seconds_to_midnight(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(0.0, (midnight - moment).total_seconds())


def admit(
    state: dict[str, Any] | None, limits: Limits, now: float | None = None
) -> tuple[dict[str, Any], RetryableError | None]:
    """Spend one token and one unit of quota, or say which limit refused.

    Returns the new state (to store whatever the outcome, so the bucket's refill time
    moves on) and ``None``, or the unchanged-but-refilled state and the rejection.
    """
    now = time.time() if now is None else now
    state = dict(state or {})
    tokens = float(state.get("tokens", limits.burst))
    last = float(state.get("ts", now))
    # A clock step backwards must not mint tokens nor leave the bucket stuck.
    elapsed = max(0.0, now - last)
    tokens = min(float(limits.burst), tokens + elapsed * limits.rate_per_second)
    day = _quota_day(state, now)
    used = int(state.get("used", 0)) if state.get("day") == day else 0
    new = {"tokens": tokens, "ts": now, "day": day, "used": used}
    if limits.daily_quota is not None and used >= limits.daily_quota:
        wait = _seconds_to_midnight(now)
        # Retryable: nothing ran, and the same command submitted again (after
        # retry_after, with a new key) may succeed. The router retries nothing itself.
        return new, RetryableError(
            ErrorCode.QUOTA_EXHAUSTED,
            f"daily quota of {limits.daily_quota} commands is used up (resets at 00:00 UTC); "
            "submit again after that with a new idempotency key",
            retry_after=round(wait, 3),
        )
    if tokens < 1.0:
        wait = (1.0 - tokens) / limits.rate_per_second
        wait = math.ceil(wait * 1000) / 1000
        return new, RetryableError(
            ErrorCode.RATE_LIMITED,
            f"this workspace's rate limit of {limits.rate_per_second:g}/s (burst {limits.burst}) "
            f"was exceeded; submit again after {wait:g}s with a new idempotency key (this one "
            "stands for this rejection)",
            retry_after=wait,
        )
    new["tokens"] = tokens - 1.0
    new["used"] = used + 1
    return new, None


def at_rest(state: dict[str, Any], limits: Limits, now: float | None = None) -> bool:
    """Whether ``state`` tells :func:`admit` nothing a missing state would not: its bucket
    has refilled and it has spent no quota today. Such an entry can be dropped."""
    now = time.time() if now is None else now
    elapsed = max(0.0, now - float(state.get("ts", now)))
    tokens = float(state.get("tokens", limits.burst)) + elapsed * limits.rate_per_second
    spent_today = state.get("day") == _quota_day(state, now) and int(state.get("used", 0)) > 0
    return tokens >= limits.burst and not spent_today


def _quota_day(state: dict[str, Any], now: float) -> str:
    """The day whose quota counts now: today, or the next day when the stored count is
    of that one (the clock stepped back over midnight, or another replica's runs ahead);
    a stored day further ahead (a clock that was years off) does not hold the quota."""
    today = _day(now)
    stored = state.get("day")
    if isinstance(stored, str) and today < stored <= _day(now + _SECONDS_PER_DAY):
        return stored
    return today
