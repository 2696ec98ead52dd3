"""Final Results, read from the results topic by every replica, and callers waiting for them.

Each replica follows all partitions of the results topic (no consumer group), starting
``lookback`` seconds back (by ``offsets_for_times``) so a restarted replica can still
answer recent polls. It keeps the last ``capacity`` Results (LRU, default 100,000, and
at most ``max_bytes`` of them, default 256 MiB) in memory; once full, a tenant holding
more than a tenth of either makes room from its own oldest (one tenant's flood, every
command of which ends with a Result, cannot push the others' out); an older result is forgotten by the ingress (a poll answers 404) but stays on
the results topic for downstream consumers until the topic's retention removes it.
The ids of the last ``capacity`` forgotten Results are kept a while longer, so that a
command whose Result was forgotten reads as finished, never as pending (the replica
may still remember the command itself); when an id leaves that list too, ``on_gone``
hears it and the other memories of that command drop it.

Cost per record: every replica sees every Result, but few are waited for here. A record
is validated once as a :data:`ResultHead` (every field but ``output`` and ``spans``,
a fifth of a full parse); only a Result someone waits for or asks about is parsed in
full, once per record for all its waiters. What is kept is ``(tenant, workspace,
bytes)``: a tuple of strings and bytes, which the garbage collector stops tracking, so
100,000 kept Results do not make every full collection walk millions of objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from core.follow import Following, TopicFollower
from core.settings import Settings
from schemas import Result

from ._bounded import LRU
from .earlier import EarlierResults
from .errors import RateLimited, ServiceUnavailable

__all__ = ["ResultHead", "ResultsFeed"]

logger = logging.getLogger(__name__)

Accept = Callable[[Result], bool]

# Every field of Result but the two large ones, validated exactly as Result validates
# them (same annotations and constraints); other keys are skipped unvalidated.
ResultHead: type[BaseModel] = create_model(
    "ResultHead",
    __config__=ConfigDict(extra="ignore", frozen=True, str_max_length=65_536),
    **{  # type: ignore[call-overload]
        name: (info.annotation, info)
        for name, info in Result.model_fields.items()
        if name not in ("output", "spans")
    },
)

# (tenant_id, space_id, record bytes)
_Kept = tuple[str, str, bytes]


class ResultsFeed(Following):
    """A bounded cache of final Results plus futures for callers that wait for one."""

    def __init__(
        self,
        settings: Settings,
        *,
        capacity: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        lookback: float = 900.0,
        max_waiters: int = 50_000,
        max_tenant_waiters: int | None = None,
    ) -> None:
        self._results: LRU[str, _Kept] = LRU(
            capacity,
            on_evict=self._forget,
            max_bytes=max_bytes,
            weigh=lambda kept: len(kept[2]),
            owner=lambda kept: kept[0],  # past a tenth, a tenant makes room from its own
        )
        # (tenant_id, space_id) of the Results forgotten lately: finished, no longer held.
        self._forgotten: LRU[str, tuple[str, str]] = LRU(
            capacity, on_evict=self._gone, owner=lambda owner: owner[0]
        )
        # Called with each command id that leaves the forgotten list.
        self.on_gone: list[Callable[[str], object]] = []
        self._waiters: dict[str, list[tuple[asyncio.Future[Result], Accept]]] = {}
        self._waiting = 0
        self._max_waiters = max_waiters
        # One tenant's waits may not use up the replica's: a tenth of them each, by default.
        self._max_tenant_waiters = max_tenant_waiters or max(1, max_waiters // 10)
        self._waiting_of: dict[str, int] = {}
        # Others that want every Result (the observability aggregator): called with
        # ``(head, raw)``, one consumer and one parse per record instead of one per reader.
        self.listeners: list[Callable[[Any, bytes], Any]] = []
        self.follower = TopicFollower(
            settings, settings.topics.results, self.apply, start_at=lookback, name="results"
        )
        # Results from before the lookback, of replays the router dropped.
        self.earlier = EarlierResults(settings, self)

    async def start(self) -> None:
        await super().start()
        await self.earlier.start()

    async def stop(self) -> None:
        await self.earlier.stop()
        await super().stop()
        for waiters in self._waiters.values():
            for future, _ in waiters:
                future.cancel()
        self._waiters.clear()

    def apply(self, record: Any, *, listeners: bool = True) -> None:
        """Keep the Result in ``record``; ``listeners``: also hand it to :attr:`listeners`
        (not for a Result looked up long after it finished, which they counted or never
        will as of now)."""
        raw = record.value
        if raw is None:
            return
        try:
            head: Any = ResultHead.model_validate_json(raw, extra="ignore")  # as Result.from_bytes
            if head.command_id in self._results:
                return  # at-least-once delivery upstream: a duplicate changes nothing
            # Parsed in full only when someone here waits for it.
            result = Result.from_bytes(raw) if head.command_id in self._waiters else None
        except ValidationError as exc:
            _invalid(record, exc)
            return
        for listener in self.listeners if listeners else ():
            listener(head, raw)
        self._keep(head.command_id, head.tenant_id, head.space_id, raw, result)

    def add(self, result: Result) -> None:
        """Remember a final Result and wake the callers waiting for it (first one wins)."""
        if result.command_id in self._results:
            return  # at-least-once delivery upstream: a duplicate changes nothing
        self._keep(result.command_id, result.tenant_id, result.space_id, result.to_bytes(), result)

    def _keep(
        self, command_id: str, tenant_id: str, space_id: str, raw: bytes, result: Result | None
    ) -> None:
        self._results.put(command_id, (tenant_id, space_id, raw))
        self._forgotten.pop(command_id)  # delivered again after it was forgotten
        waiters = self._waiters.get(command_id)
        if not waiters or result is None:
            return
        keep = []
        for future, accept in waiters:
            if future.done():
                continue
            if accept(result):
                future.set_result(result)
            else:
                keep.append((future, accept))  # someone else's command id: keep waiting
        if keep:
            self._waiters[command_id] = keep
        else:
            del self._waiters[command_id]

    def get(self, command_id: str, accept: Accept) -> Result | None:
        kept = self._results.get(command_id)
        if kept is None:
            return None
        try:
            result = Result.from_bytes(kept[2])
        except ValidationError as exc:
            # Its head was valid, the rest is not: forget it, as an invalid record is.
            self._results.pop(command_id)
            logger.warning(
                "ignored an invalid result record", extra={"fields": {"errors": exc.error_count()}}
            )
            return None
        return result if accept(result) else None

    def waited_for(self, command_id: str) -> bool:
        """Whether a caller waits here for ``command_id``'s Result."""
        return command_id in self._waiters

    def owner(self, command_id: str) -> tuple[str, str] | None:
        """``(tenant_id, space_id)`` of a kept Result, without parsing it."""
        kept = self._results.get(command_id)
        return None if kept is None else (kept[0], kept[1])

    def forgotten(self, command_id: str) -> tuple[str, str] | None:
        """``(tenant_id, space_id)`` of a command whose Result came and was forgotten."""
        return self._forgotten.peek(command_id)

    def _forget(self, command_id: str, kept: _Kept) -> None:
        self._forgotten.put(command_id, (kept[0], kept[1]))

    def _gone(self, command_id: str, _owner: tuple[str, str]) -> None:
        if command_id in self._results:
            return  # delivered again meanwhile: its Result answers
        for listener in self.on_gone:
            listener(command_id)

    async def wait(
        self, command_id: str, timeout: float, accept: Accept, *, tenant_id: str  # noqa: ASYNC109
    ) -> Result | None:
        """The Result of ``command_id`` that ``accept`` allows, waiting up to ``timeout`` s.

        Raises:
            RateLimited: ``tenant_id`` has its share of this replica's waits in use.
            ServiceUnavailable: too many callers are waiting on this replica.
        """
        found = self.get(command_id, accept)
        if found is not None or timeout <= 0:
            return found
        if self._waiting >= self._max_waiters:
            raise ServiceUnavailable("too many waiting requests on this replica", retry_after=1.0)
        mine = self._waiting_of.get(tenant_id, 0)
        if mine >= self._max_tenant_waiters:
            raise RateLimited("too many waiting requests of this tenant", retry_after=1.0)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        entry = (future, accept)
        self._waiters.setdefault(command_id, []).append(entry)
        self._waiting += 1
        self._waiting_of[tenant_id] = mine + 1
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            self._waiting -= 1
            left = self._waiting_of[tenant_id] - 1
            if left:
                self._waiting_of[tenant_id] = left
            else:
                del self._waiting_of[tenant_id]
            waiters = self._waiters.get(command_id)
            if waiters is not None and entry in waiters:
                waiters.remove(entry)
                if not waiters:
                    del self._waiters[command_id]

    @property
    def cached(self) -> int:
        return len(self._results)


def _invalid(record: Any, exc: ValidationError) -> None:
    logger.warning(
        "ignored an invalid result record",
        extra={
            "fields": {
                "partition": record.partition,
                "offset": record.offset,
                "errors": exc.error_count(),
            }
        },
    )
