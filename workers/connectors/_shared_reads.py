"""Reads of an upstream collection (a Slack channel, a mailbox's sent messages, a
repository's or a Jira project's issues) that answer "did an earlier attempt already
take effect?" for every command of that collection.

A read maps each of our keys it found to the output the command would have had. It
answers a :class:`Doubt` when it began after every attempt in doubt had been sent and
reached back to the command's submission; then later questions reuse it instead of
reading again, and questions asked while a read is under way wait for it. So after a
partition changes hands, its commands in doubt cost one read per collection, not one per
command. Bounded: the least recently used reads are forgotten.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from core.errors import RetryableError
from core.lru import LRU
from schemas import ErrorCode

from ._base import ConnectorCall, Doubt
from ._http import Reply, raise_for_status

__all__ = [
    "READ_LIMIT",
    "READ_TIMEOUT",
    "Found",
    "SharedReads",
    "after_index",
    "for_reads",
    "index_wait",
    "indexed",
    "listed_page",
    "output_for",
]

CACHE_ENTRIES = 1_000
# A read serves every command waiting on it, so it gets its own bounds, not the request
# timeout or body limit of whichever command started it (one near its deadline, say).
READ_TIMEOUT = 10.0
READ_LIMIT = 8 * 1024 * 1024

Found = dict[str, Any]  # our key -> what the command's output would have been


def output_for(found: Found, call: ConnectorCall) -> dict[str, Any] | None:
    """What a read found for ``call``'s key, as a copy (the read is shared), or None."""
    output = found.get(call.idempotency_key)
    return dict(output) if output is not None else None


def listed_page(reply: Reply, what: str, field: str) -> tuple[dict[str, Any], list[Any]]:
    """A read's answer: its JSON object and the list under ``field``.

    Raises:
        CredentialsExpired, RetryableError, PermanentError: a failed reply (by its status).
        RetryableError: UPSTREAM_UNAVAILABLE when the answer has no such list.
    """
    raise_for_status(reply, what)
    page = reply.json(what)
    items = page.get(field) if isinstance(page, dict) else None
    if not isinstance(items, list):
        raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: unexpected response")
    return page, items


def after_index(doubt: Doubt, lag: float) -> Doubt:
    """``doubt`` as a read of a search index that trails the upstream's writes by ``lag``
    seconds must answer it: begun ``lag`` after the attempts in doubt were sent. Rounded
    (a whole second later, a whole minute back: these upstreams count creation times in
    minutes), so that the doubts of one rebalance, settled and submitted moments apart and
    woken in any order, share one read."""
    return Doubt(since=math.floor(doubt.since / 60) * 60, settled_at=math.ceil(doubt.settled_at + lag))


def index_wait(doubt: Doubt, lag: float) -> float:
    """Seconds from now until a read of an index lagging ``lag`` can answer ``doubt``."""
    return max(0.0, after_index(doubt, lag).settled_at - time.time())


async def indexed(doubt: Doubt, lag: float) -> Doubt:
    """Wait until a read of an index lagging ``lag`` can answer ``doubt``; returns the
    doubt as such a read must answer it (:func:`after_index`)."""
    ready = after_index(doubt, lag)
    # A loop: a timer may fire a little before the wall clock reaches the time.
    while (wait := ready.settled_at - time.time()) > 0:  # noqa: ASYNC110 - bounded by the wait
        await asyncio.sleep(wait)
    return ready


def for_reads(call: ConnectorCall) -> ConnectorCall:
    """``call`` with the timeout a shared read uses."""
    return dataclasses.replace(call, timeout=READ_TIMEOUT)


@dataclass(slots=True)
class _Read:
    read_at: float  # when the read began (Unix seconds)
    oldest: float  # how far back it reaches
    found: Found = field(default_factory=dict)

    def answers(self, doubt: Doubt) -> bool:
        return self.read_at >= doubt.settled_at and self.oldest <= doubt.since


class SharedReads:
    def __init__(self, capacity: int = CACHE_ENTRIES) -> None:
        self._done: LRU[Hashable, _Read] = LRU(capacity)
        self._reading: dict[Hashable, tuple[_Read, asyncio.Future[Found]]] = {}

    async def found(
        self, scope: Hashable, doubt: Doubt, read: Callable[[float], Awaitable[Found]]
    ) -> Found:
        """What a read of ``scope`` that answers ``doubt`` found; ``read(oldest)`` reads it.

        Raises:
            Whatever ``read`` raises (every question waiting on that read sees it).
        """
        done = self._done.get(scope)
        if done is not None and done.answers(doubt):
            return done.found
        pending = self._reading.get(scope)
        if pending is not None and pending[0].answers(doubt):
            try:
                return await asyncio.shield(pending[1])
            finally:
                del pending  # see below
        entry = _Read(read_at=time.time(), oldest=doubt.since)
        task = asyncio.ensure_future(read(entry.oldest))
        self._reading[scope] = (entry, task)

        def finished(done: asyncio.Future[Found]) -> None:
            if self._reading.get(scope, (None, None))[1] is done:
                del self._reading[scope]
            if not done.cancelled() and done.exception() is None:
                entry.found = done.result()
                self._done.put(scope, entry)

        task.add_done_callback(finished)
        try:
            return await asyncio.shield(task)
        finally:
            # A failed read's exception, which the task keeps, has this frame on its
            # traceback: kept here, it would make a reference cycle
            # holding every waiting command's frames until a full GC collection.
            del task
