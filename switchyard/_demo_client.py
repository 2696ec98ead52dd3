"""The demo's caller: the official MCP Python SDK client, as an agent platform would use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

__all__ = ["DemoOutcome", "call_daily_summary", "format_trace"]


@dataclass
class DemoOutcome:
    ok: bool
    command_id: str = ""
    connector: str = "?"
    operation: str = "?"
    summary: str = ""
    tools: list[str] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)


async def call_daily_summary(url: str, api_key: str, *, summary: str, mode: str = "auto") -> DemoOutcome:
    """List the tenant's tools and call ``daily_summary`` through MCP; fetch the trace over REST."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("daily_summary", {"summary": summary})
    meta = result.meta or {}
    outcome = DemoOutcome(
        ok=not result.is_error,
        command_id=str(meta.get("switchyard/command_id", "")),
        connector=str(meta.get("switchyard/connector", "?")),
        operation=str(meta.get("switchyard/operation", "?")),
        tools=tools,
    )
    if result.is_error:
        outcome.summary = " ".join(getattr(block, "text", "") for block in result.content)[:300]
    else:
        outcome.summary = _short(result.structured_content)
    if outcome.command_id:
        base = url.split("/mcp", 1)[0]
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{base}/v1/commands/{outcome.command_id}") as response:
                if response.status == 200:
                    body = await response.json()
                    outcome.spans = (body.get("result") or body).get("spans") or []
    return outcome


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def format_trace(spans: list[dict[str, Any]]) -> list[str]:
    """The spans of one command as an indented waterfall (name, offset, duration)."""
    if not spans:
        return ["trace: (not available)"]
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    ids = {span["span_id"] for span in spans}
    for span in spans:
        parent = span.get("parent_span_id")
        by_parent.setdefault(parent if parent in ids else None, []).append(span)
    start = min(span["start_unix_nano"] for span in spans)
    lines = [f"trace {spans[0]['trace_id']}"]

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s["start_unix_nano"]):
            offset = (span["start_unix_nano"] - start) / 1e6
            duration = (span["end_unix_nano"] - span["start_unix_nano"]) / 1e6
            lines.append(f"{'  ' * depth}└ {span['name']}  +{offset:.1f} ms  {duration:.1f} ms")
            walk(span["span_id"], depth + 1)

    walk(None, 1)
    return lines
