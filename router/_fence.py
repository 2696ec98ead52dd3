"""Route only what this replica still owns: a fence at every rebalance and at shutdown.

faust with ``stream_wait_empty=False`` does not wait for in-flight work when a
rebalance revokes partitions, and the router's batch queue (``router.app``) is its
own: without a fence a replica kept routing commands it had fetched before the
rebalance while the partition's new owner, which had already read the dedup
changelog, routed them again — two RoutedCommands for one command id after a router
joined or left (issue 8).

The fence has two halves:

* :meth:`RebalanceFence.close`, at revocation and before the consumer leaves the
  group at shutdown, fences the current consumer generation off and waits (bounded)
  for the batch in flight. Its pending entries and outputs are acked when it ends,
  so the next owner finds them (dedup table, or the in-doubt check of
  ``router._verify``).
* :meth:`RebalanceFence.split` keeps only events fetched in the live generation;
  the others are marked handled but never acked, so their offsets are not committed
  and whoever owns the partition now reads them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["RebalanceFence"]

_NONE = object()


class RebalanceFence:
    """Holds batches and rebalances apart; see the module docstring."""

    def __init__(self) -> None:
        # Held by the router for the whole of a batch (``Router.handle_batch``).
        self.routing = asyncio.Lock()
        self.dropped = 0
        self._fenced: Any = _NONE

    def split(self, events: Sequence[Any], generation: Any) -> tuple[list[Any], list[Any]]:
        """Split ``events`` into (live, stale) for the consumer's ``generation``.

        Stale: fetched in another generation, or any event while the current
        generation is fenced off (a revocation is under way). ``None`` (no consumer
        yet) or a message without a generation keeps the event: nothing to judge by.
        """
        if generation is None:
            return list(events), []
        fenced = generation == self._fenced
        live: list[Any] = []
        stale: list[Any] = []
        for event in events:
            fetched_in = getattr(event.message, "generation_id", None)
            if not fenced and (fetched_in is None or fetched_in == generation):
                live.append(event)
            else:
                stale.append(event)
        self.dropped += len(stale)
        return live, stale

    async def close(self, generation: Any, within: float) -> bool:
        """Fence ``generation`` off, then wait for the batch in flight.

        Returns:
            ``False`` when that batch did not end within ``within`` seconds (the
            caller logs it; the rebalance goes on).
        """
        self._fenced = generation
        try:
            async with asyncio.timeout(within), self.routing:
                return True
        except TimeoutError:
            return False
