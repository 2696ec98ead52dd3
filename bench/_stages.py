"""Where a lone MCP call's time goes, hop by hop, from the spans its Result carries.

One call at a time (no queueing anywhere), each followed by ``GET /v1/commands/{id}``
for its spans. Every process runs on the same host as the load generator, so the spans'
wall-clock times and the generator's share one clock. The stages, in order:

- ``ingress``: the call sent → the command handed to the ingress's Kafka producer;
- ``to_router``: → the router starts routing it (the producer's linger, the produce
  round trip, the router's fetch and batch loop);
- ``router``: routing it (the ``router.route`` span);
- ``to_worker``: → the worker starts it (the router's state write and output send,
  the worker's fetch);
- ``worker``: the worker's execution, upstream call included (``worker.execute``);
- ``upstream``: of which the call to the API (the ``upstream.*`` span);
- ``back``: → the MCP answer is read (the worker's transaction and its commit markers,
  the ingress's read_committed fetch of the Result, the HTTP answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from ._load import _META, MODERN, percentiles

__all__ = ["STAGES", "lone_calls", "stages_of"]

STAGES = ("ingress", "to_router", "router", "to_worker", "worker", "upstream", "back")


def stages_of(sent_ns: int, answered_ns: int, spans: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    """Seconds per stage of one call, or None when a hop's span is missing."""
    publish = route = execute = upstream = None
    for span in spans:
        name = str(span.get("name", ""))
        if name.endswith(" publish"):
            publish = span
        elif name == "router.route":
            route = span
        elif name == "worker.execute":
            execute = span
        elif name.startswith("upstream."):
            upstream = span
    if publish is None or route is None or execute is None:
        return None

    def gap(start: int, end: int) -> float:
        return (end - start) / 1e9

    out = {
        "ingress": gap(sent_ns, publish["end_unix_nano"]),
        "to_router": gap(publish["end_unix_nano"], route["start_unix_nano"]),
        "router": gap(route["start_unix_nano"], route["end_unix_nano"]),
        "to_worker": gap(route["end_unix_nano"], execute["start_unix_nano"]),
        "worker": gap(execute["start_unix_nano"], execute["end_unix_nano"]),
        "back": gap(execute["end_unix_nano"], answered_ns),
    }
    if upstream is not None:
        out["upstream"] = gap(upstream["start_unix_nano"], upstream["end_unix_nano"])
    return out


async def lone_calls(
    session: aiohttp.ClientSession, base_url: str, key: str, *, count: int, pause: float = 0.02
) -> dict[str, Any]:
    """``count`` MCP ``tools/call`` requests one at a time, ``pause`` s apart, split into
    :data:`STAGES` (p50/p95 ms of each) next to the whole call's latency."""
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "daily_summary",
    }
    totals: list[float] = []
    by_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    unsplit = errors = 0
    for n in range(count):
        body = {
            "jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "daily_summary", "arguments": {"summary": f"lone {n}"}, "_meta": _META},
        }
        sent = time.time_ns()
        async with session.post(f"{base_url}/mcp/main", data=orjson.dumps(body), headers=headers) as response:
            raw = await response.read()
        answered = time.time_ns()
        result = orjson.loads(raw).get("result") if response.status == 200 else None
        if not result or result.get("isError"):
            errors += 1
            continue
        totals.append((answered - sent) / 1e9)
        command_id = result["_meta"]["switchyard/command_id"]
        async with session.get(f"{base_url}/v1/commands/{command_id}", headers=headers) as response:
            status = orjson.loads(await response.read()) if response.status == 200 else {}
        spans = (status.get("result") or {}).get("spans") or []
        stages = stages_of(sent, answered, spans)
        if stages is None:
            unsplit += 1
        else:
            for stage, seconds in stages.items():
                by_stage[stage].append(seconds)
        await asyncio.sleep(pause)
    return {
        "calls": len(totals), "errors": errors, "unsplit": unsplit,
        "latency": percentiles(totals),
        "stages": {stage: _short(percentiles(values)) for stage, values in by_stage.items()},
    }


def _short(summary: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in summary.items() if k in ("p50_ms", "p95_ms")}
