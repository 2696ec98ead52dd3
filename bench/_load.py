"""Load generators and the results-topic clock used by the benchmarks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition

from core.kafka import make_consumer, start_client, topic_partitions
from core.settings import Settings

__all__ = [
    "ResultClock",
    "direct_emulator_calls",
    "mcp_calls",
    "percentiles",
    "submit_batches",
]

MODERN = "2026-07-28"
_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "switchyard-bench", "version": "1"},
}


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    values = sorted(samples)
    if not values:
        return {"count": 0}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

    return {"count": len(values), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}


class ResultClock:
    """Follows the results topic from its end: when each command's first Result arrived,
    how many Results it got (a duplicate shows as 2) and with which status."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.arrived: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self.status_of: dict[str, str] = {}
        self.statuses: Counter[str] = Counter()
        self.last = time.perf_counter()
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    async def start(self) -> None:
        topic = self.settings.topics.results
        partitions = await topic_partitions(self.settings, topic)
        self._consumer = make_consumer(self.settings, group_id=None, max_poll_records=5000)
        await start_client(self._consumer, what="bench results clock")
        assigned = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:  # pin the start before anything of this run is submitted
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    body = orjson.loads(record.value)
                    command_id = body["command_id"]
                    status = str(body.get("status", "?"))
                    self.arrived.setdefault(command_id, now)
                    self.counts[command_id] += 1
                    self.status_of[command_id] = status
                    self.statuses[status] += 1
                    self.last = now

    async def wait_for(self, ids: Iterable[str], within: float) -> float:
        """Seconds-clock time of the last of ``ids`` to arrive.

        Raises:
            TimeoutError: some had no Result within ``within`` seconds.
        """
        wanted = set(ids)
        async with asyncio.timeout(within):
            while not wanted <= self.arrived.keys():  # noqa: ASYNC110 - polled with a bound
                await asyncio.sleep(0.05)
        return max((self.arrived[i] for i in wanted), default=time.perf_counter())

    async def all_arrived(self, ids: Iterable[str], within: float) -> bool:
        """Whether every one of ``ids`` had a Result within ``within`` seconds."""
        try:
            await self.wait_for(ids, within)
        except TimeoutError:
            return False
        return True

    async def quiet(self, seconds: float, within: float) -> None:
        """Wait (bounded) until no Result came for ``seconds``: a late duplicate lands here."""
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline and time.perf_counter() - self.last < seconds:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    def summary(self, ids: list[str]) -> dict[str, Any]:
        return {
            "commands": len(ids),
            "with_result": sum(1 for i in ids if i in self.arrived),
            "duplicates": sum(max(0, self.counts[i] - 1) for i in ids),
            "statuses": dict(Counter(self.status_of.get(i, "none") for i in ids)),
        }

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()


async def submit_batches(
    session: aiohttp.ClientSession,
    base_url: str,
    keys: list[str],
    count: int,
    *,
    batch: int = 250,
    concurrency: int = 4,
    arguments: dict[str, Any] | None = None,
) -> list[str]:
    """Submit ``count`` commands through ``POST /v1/commands:batch``, round-robin over tenant keys."""
    ids: list[str] = []
    key_cycle = itertools.cycle(keys)
    sizes = [min(batch, count - start) for start in range(0, count, batch)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for size in sizes:
        queue.put_nowait(size)
    args = arguments or {"summary": "bench"}

    async def sender() -> None:
        while not queue.empty():
            size = queue.get_nowait()
            key = next(key_cycle)
            body = {"items": [{"action": "daily_summary", "arguments": args} for _ in range(size)]}
            async with session.post(
                f"{base_url}/v1/commands:batch", data=orjson.dumps(body),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            ) as response:
                reply = await response.json(loads=orjson.loads)
                if response.status >= 300:
                    raise RuntimeError(f"batch submit answered {response.status}: {reply}")
                ids.extend(item["command_id"] for item in reply["items"] if item.get("command_id"))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return ids


async def mcp_calls(
    session: aiohttp.ClientSession,
    url: str,
    key: str | list[str],
    *,
    duration: float,
    concurrency: int,
    rate: float | None = None,
    max_calls: int = 1_000_000,
) -> dict[str, Any]:
    """Stateless (2026-07-28) ``tools/call`` requests: closed loop, or open loop at ``rate``/s.

    With several tenant keys, calls go round-robin over them (clients of many tenants,
    as an agent platform's traffic is).
    """
    latencies: list[float] = []
    errors = 0
    counter = itertools.count(1)
    keys = [key] if isinstance(key, str) else list(key)
    header_sets = [
        {
            "Authorization": f"Bearer {k}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/call",
            "Mcp-Name": "daily_summary",
        }
        for k in keys
    ]
    end = time.perf_counter() + duration

    async def one() -> None:
        nonlocal errors
        n = next(counter)
        headers = header_sets[n % len(header_sets)]
        body = {
            "jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "daily_summary", "arguments": {"summary": f"bench {n}"}, "_meta": _META},
        }
        started = time.perf_counter()
        async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
            reply = orjson.loads(await response.read())
        if response.status != 200 or "error" in reply or reply["result"].get("isError"):
            errors += 1
        else:
            latencies.append(time.perf_counter() - started)

    async def closed_loop() -> None:
        while time.perf_counter() < end and len(latencies) + errors < max_calls:
            await one()

    started = time.perf_counter()
    if rate is None:
        await asyncio.gather(*(closed_loop() for _ in range(concurrency)))
    else:
        pending: set[asyncio.Task[None]] = set()
        interval = 1.0 / rate
        next_at = time.perf_counter()
        while time.perf_counter() < end:
            next_at += interval
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        async with asyncio.timeout(60):
            await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - started
    return {"calls": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "calls_per_s": round(len(latencies) / elapsed, 1), "latency": percentiles(latencies)}


async def direct_emulator_calls(
    session: aiohttp.ClientSession, emulator_url: str, token: str, *, count: int, concurrency: int
) -> dict[str, Any]:
    """The same Slack call made straight to the emulator: what the pipeline adds is the difference."""
    latencies: list[float] = []
    remaining = itertools.count()

    async def loop() -> None:
        while next(remaining) < count:
            started = time.perf_counter()
            async with session.post(
                f"{emulator_url}/api/chat.postMessage", data=orjson.dumps({"channel": "#bench", "text": "x"}),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return {"latency": percentiles(latencies)}
