"""Load generators and the results-topic clock used by the benchmarks."""

from __future__ import annotations

import asyncio
import itertools
import math
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
    """Nearest-rank percentiles in ms (p99 of 300 samples is the 297th smallest)."""
    values = sorted(samples)
    if not values:
        return {"count": 0}

    def at(q: float) -> float:
        return round(values[max(0, math.ceil(q * len(values)) - 1)] * 1000, 2)

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
        self.bytes = 0  # of every Result record seen (the baseline sends records of their mean size)
        self.records = 0
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
                    self.bytes += len(record.value)
                    self.records += 1
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

    def mean_record_bytes(self) -> int | None:
        return round(self.bytes / self.records) if self.records else None

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


BATCH_ITEMS = 250
BATCH_SENDERS = 4


async def submit_batches(
    session: aiohttp.ClientSession,
    base_url: str,
    keys: list[str],
    count: int,
    *,
    batch: int = BATCH_ITEMS,
    concurrency: int = BATCH_SENDERS,
    arguments: dict[str, Any] | None = None,
    refused: Counter[str] | None = None,
) -> list[str]:
    """Submit ``count`` commands through ``POST /v1/commands:batch``, round-robin over tenant
    keys; returns the accepted ids. Items the ingress refused are counted in ``refused``
    by their status (a batch answers each item on its own)."""
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
                for item in reply["items"]:
                    if item.get("command_id"):
                        ids.append(item["command_id"])
                    elif refused is not None:
                        refused[str(item.get("status_code", "?"))] += 1

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
    drain: float = 60.0,
) -> dict[str, Any]:
    """Stateless (2026-07-28) ``tools/call`` requests: closed loop, or open loop at ``rate``/s.

    With several tenant keys, calls go round-robin over them (clients of many tenants,
    as an agent platform's traffic is). Each call is one ``tools/call`` on a kept-alive
    connection (no ``initialize``, no session: the stateless revision has none).

    In the open loop a call's latency runs from when it was due, not from when the load
    generator got round to sending it (no coordinated omission). Failed calls (an HTTP
    error, a JSON-RPC error, a tool error such as a Result later than the wait, an
    exception) are counted by kind, and ``latency_all_calls`` includes them, at the time
    they ended: ``latency`` alone covers the calls that succeeded.
    """
    latencies: list[float] = []
    every: list[float] = []
    error_kinds: Counter[str] = Counter()
    send_lag = 0.0
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

    async def one(due: float | None = None) -> None:
        nonlocal send_lag
        started = time.perf_counter()
        if due is not None:
            send_lag = max(send_lag, started - due)
            started = due
        n = next(counter)
        headers = header_sets[n % len(header_sets)]
        body = {
            "jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "daily_summary", "arguments": {"summary": f"bench {n}"}, "_meta": _META},
        }
        failed: str | None = None
        try:
            async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
                raw = await response.read()
            if response.status != 200:
                failed = f"http_{response.status}"
            else:
                reply = orjson.loads(raw)
                if "error" in reply:
                    failed = "jsonrpc_error"
                elif reply["result"].get("isError"):
                    failed = "tool_error"
        except Exception as exc:  # counted: a failure must not vanish from the report
            failed = type(exc).__name__
        took = time.perf_counter() - started
        every.append(took)
        if failed is None:
            latencies.append(took)
        else:
            error_kinds[failed] += 1

    async def closed_loop() -> None:
        while time.perf_counter() < end and len(every) < max_calls:
            await one()

    started = time.perf_counter()
    if rate is None:
        await asyncio.gather(*(closed_loop() for _ in range(concurrency)))
    else:
        pending: set[asyncio.Task[None]] = set()
        interval = 1.0 / rate
        next_at = time.perf_counter()
        while next_at < end:
            task = asyncio.create_task(one(next_at))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        # Bounded: calls still unanswered ``drain`` seconds after the last was sent are
        # given up and counted, so a machine that cannot serve the rate still gets its
        # report (it used to end the whole bench with a TimeoutError).
        if pending:
            _, unfinished = await asyncio.wait(set(pending), timeout=drain)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            if unfinished:
                error_kinds[f"unanswered_after_{drain:g}s"] += len(unfinished)
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {
        "calls": len(latencies), "errors": sum(error_kinds.values()), "error_kinds": dict(error_kinds),
        "seconds": round(elapsed, 2), "calls_per_s": round(len(latencies) / elapsed, 1),
        "latency": percentiles(latencies), "latency_all_calls": percentiles(every),
    }
    if rate is not None:
        out["offered_per_s"] = rate
        out["max_send_lag_ms"] = round(send_lag * 1000, 2)
    return out


async def direct_emulator_calls(
    session: aiohttp.ClientSession, emulator_url: str, token: str, *, count: int, concurrency: int
) -> dict[str, Any]:
    """The same Slack call made straight to the emulator, ``concurrency`` at a time (only
    answers with HTTP 200 and ``ok`` count): what the pipeline adds is the difference."""
    latencies: list[float] = []
    errors = 0
    remaining = itertools.count()

    async def loop() -> None:
        nonlocal errors
        while next(remaining) < count:
            started = time.perf_counter()
            async with session.post(
                f"{emulator_url}/api/chat.postMessage", data=orjson.dumps({"channel": "#bench", "text": "x"}),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ) as response:
                raw = await response.read()
            if response.status == 200 and orjson.loads(raw).get("ok") is True:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return {"concurrency": concurrency, "errors": errors, "latency": percentiles(latencies)}
