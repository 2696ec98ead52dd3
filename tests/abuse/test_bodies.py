"""Hostile bodies: oversized (413), deeply nested (400), malformed JSON-RPC (a JSON-RPC
error, 4xx or 200) — never a 5xx, and the ingress keeps running."""

from __future__ import annotations

import orjson
import pytest

from .conftest import Abuse, Session, modern_headers, modern_meta

MIB = 1024 * 1024


def _nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize("path", ["/v1/commands", "/v1/commands:batch"])
async def test_oversized_rest_bodies_are_413(abuse: Abuse, path: str) -> None:
    before = await abuse.published()
    body = orjson.dumps({"action": "daily_summary", "arguments": {"summary": "x" * (3 * MIB)}})
    status, reply, _ = await abuse.request("POST", path, raw=body, headers=abuse.auth("acme"))
    assert status == 413, reply
    # The same without a Content-Length (chunked): the cap holds while reading, too.
    async def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{abuse.url}{path}", data=chunks(),
                                headers={**abuse.auth("acme"), "Content-Type": "application/json"}) as response:
            assert response.status == 413, await response.text()
    assert await abuse.published() == before


@pytest.mark.parametrize("size", [int(1.5 * MIB), 3 * MIB])
async def test_oversized_mcp_bodies_are_413(abuse: Abuse, size: int) -> None:
    session = await Session(abuse, "acme").open()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "daily_summary", "arguments": {"summary": "x" * size}}}
    status, reply = await session.call("tools/call", raw=orjson.dumps(body))
    assert status == 413, reply


@pytest.mark.parametrize("depth", [30, 200, 5000])
async def test_deeply_nested_rest_bodies_are_400(abuse: Abuse, depth: int) -> None:
    before = await abuse.published()
    # orjson refuses more than 1024 levels itself; both refusals must be a 400.
    raw = (b'{"action": "daily_summary", "arguments": {"summary": "x", "deep": '
           + b'{"n": ' * depth + b"1" + b"}" * depth + b"}}")
    for path in ("/v1/commands", "/v1/commands:batch"):
        status, reply, _ = await abuse.request("POST", path, raw=raw, headers=abuse.auth("acme"))
        assert status == 400, (path, reply)
    assert await abuse.published() == before


@pytest.mark.parametrize("depth", [30, 200, 5000])
async def test_deeply_nested_mcp_bodies_are_json_rpc_errors(abuse: Abuse, depth: int) -> None:
    session = await Session(abuse, "acme").open()
    raw = (b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "daily_summary", '
           b'"arguments": {"summary": "x", "deep": ' + b"[" * depth + b"]" * depth + b"}}}")
    status, reply = await session.call("tools/call", raw=raw)
    if depth > 1024:  # past orjson's own limit: no message could be read, so no id
        assert status == 400 and reply["error"]["code"] == -32700 and reply["id"] is None, reply
        assert reply["error"]["message"] == "Parse error: JSON nests deeper than 24 levels"
    else:  # the call's own error, so the client's session goes on
        assert status == 200 and reply["error"]["code"] == -32602 and reply["id"] == 7, reply


MALFORMED = {
    "parse error": b'{"jsonrpc": "2.0", "id": 1, "method": ',
    "not json at all": b"\x00\xff\xfe garbage",
    "wrong jsonrpc version": b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}',
    "no jsonrpc member": b'{"id": 1, "method": "tools/list"}',
    "batch array": b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]',
    "empty batch": b"[]",
    "missing method": b'{"jsonrpc": "2.0", "id": 1, "params": {}}',
    "method not a string": b'{"jsonrpc": "2.0", "id": 1, "method": 42}',
    "huge integer id": b'{"jsonrpc": "2.0", "id": ' + b"9" * 400 + b', "method": "tools/list"}',
    "huge float id": b'{"jsonrpc": "2.0", "id": 1e400, "method": "tools/list"}',
    "id is an object": b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}',
    "huge string id": b'{"jsonrpc": "2.0", "id": "' + b"i" * 200_000 + b'", "method": "tools/list"}',
    "params not an object": b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1, 2]}',
    "unknown method": b'{"jsonrpc": "2.0", "id": 1, "method": "no/such/method"}',
    "json scalar": b"42",
    "empty body": b"",
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_json_rpc_gets_a_json_rpc_error_never_a_5xx(abuse: Abuse, name: str) -> None:
    raw = MALFORMED[name]
    session = await Session(abuse, "acme").open()
    status, reply = await session.call("tools/list", raw=raw)
    assert status < 500, (status, reply)
    assert status == 200 or 400 <= status < 500, status
    if name != "huge string id":  # an error may echo the id; it must still be an error
        assert isinstance(reply, dict) and "error" in reply and "result" not in reply, reply
    # The stateless revision's path, with its envelope headers.
    status, reply, _ = await abuse.request(
        "POST", "/mcp/main", raw=raw, headers={**abuse.auth("acme"), **modern_headers("tools/list")}
    )
    assert 400 <= status < 500 or status == 200, (status, reply)
    assert isinstance(reply, dict) and "error" in reply, reply
    assert abuse.system.dead() == []


async def test_a_stateless_call_with_a_malformed_envelope_is_a_4xx(abuse: Abuse) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "daily_summary", "arguments": {"summary": "x"}, "_meta": modern_meta()}}
    for headers in (modern_headers("tools/list", "daily_summary"), modern_headers("tools/call", "other"),
                    {**modern_headers("tools/call", "daily_summary"), "MCP-Protocol-Version": "1999-01-01"}):
        status, reply, _ = await abuse.request("POST", "/mcp/main", body=body,
                                               headers={**abuse.auth("acme"), **headers})
        assert 400 <= status < 500 and "error" in reply, (headers, status, reply)
