"""In-doubt commands after a crash: did the previous router send their output or not?

A dedup entry in state ``pending`` means a router wrote it (durably) and then may or
may not have sent the command's output before it died. The entry names the output's
topic, partition and the time it was written, so the answer is in that partition from
that time on: read it up to its current end and look for the command id header.
This runs only for commands replayed after a crash (at most a batch per partition).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from core.errors import KafkaUnavailable
from core.kafka import make_consumer, start_client
from core.settings import Settings
from schemas import Headers

__all__ = ["InDoubt", "find_sent"]

logger = logging.getLogger(__name__)

# Producer timestamps come from the sending router's clock, the same clock that stamped
# the pending entry just before the send; the margin covers clock steps between replicas.
_MARGIN_MS = 60_000
_MAX_RECORDS = 500_000

InDoubt = tuple[str, str, int, int]  # command_id, topic, partition, written_at_ms


async def find_sent(
    settings: Settings, entries: Iterable[InDoubt], *, limit_s: float = 60.0
) -> set[str]:
    """Return the command ids among ``entries`` whose output is already on its topic.

    Raises:
        KafkaUnavailable: when the partitions cannot be read within ``limit_s``.
    """
    wanted: dict[TopicPartition, tuple[int, set[str]]] = {}
    grouped: dict[TopicPartition, list[tuple[str, int]]] = defaultdict(list)
    for command_id, topic, partition, written_at in entries:
        grouped[TopicPartition(topic, partition)].append((command_id, written_at))
    for tp, items in grouped.items():
        wanted[tp] = (min(ts for _, ts in items) - _MARGIN_MS, {cid for cid, _ in items})
    if not wanted:
        return set()
    consumer = make_consumer(settings, group_id=None, isolation_level="read_uncommitted")
    await start_client(consumer, what="router in-doubt check")
    found: set[str] = set()
    try:
        async with asyncio.timeout(limit_s):
            tps = list(wanted)
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.offsets_for_times(
                {tp: max(0, ts) for tp, (ts, _) in wanted.items()}
            )
            pending: set[TopicPartition] = set()
            for tp in tps:
                start = starts.get(tp)
                if start is None or start.offset >= ends[tp]:
                    continue  # nothing written after the entry: not sent.
                consumer.seek(tp, start.offset)
                pending.add(tp)
            seen = 0
            while pending and seen < _MAX_RECORDS:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=2000)
                for tp, records in batches.items():
                    ids = wanted[tp][1]
                    for record in records:
                        seen += 1
                        for key, value in record.headers or ():
                            if key == Headers.COMMAND_ID and value is not None:
                                command_id = value.decode("utf-8", "replace")
                                if command_id in ids:
                                    found.add(command_id)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
    except (KafkaError, TimeoutError) as exc:
        raise KafkaUnavailable(f"in-doubt check failed ({type(exc).__name__})") from exc
    finally:
        await consumer.stop()
    logger.info(
        "in-doubt commands checked",
        extra={
            "fields": {
                "checked": sum(len(v[1]) for v in wanted.values()),
                "already_sent": len(found),
            }
        },
    )
    return found
