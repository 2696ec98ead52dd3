"""``switchyard bench``'s open-loop MCP load ends in bounded time and reports what it could
not get answered, instead of failing the whole run (bench._load.mcp_calls)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from bench._load import mcp_calls


async def test_calls_left_unanswered_are_given_up_after_the_drain_and_counted() -> None:
    answered = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal answered
        body = await request.json()
        if body["id"] % 2:
            await asyncio.sleep(3600)  # a pipeline that cannot keep up
        answered += 1
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}})

    app = web.Application()
    app.router.add_post("/mcp/main", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            report = await mcp_calls(
                session, f"http://127.0.0.1:{port}/mcp/main", "key", duration=0.5, concurrency=0, rate=40, drain=0.5
            )
            took = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert took < 5
    unanswered = report["error_kinds"]["unanswered_after_0.5s"]
    assert unanswered >= 5 and report["calls"] == answered >= 5
    assert report["errors"] == unanswered
