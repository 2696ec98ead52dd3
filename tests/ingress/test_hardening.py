"""Malformed, oversized and hostile requests get clear 4xx answers, never a 5xx."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ingress.app import IngressOptions
from ingress.testing import IngressHarness, unique_id

JSON = {"Content-Type": "application/json"}


async def test_oversized_body_is_413_before_parsing(settings):
    async with IngressHarness(settings, options=IngressOptions(max_body_bytes=4096)) as harness:
        acme = await harness.add_tenant(unique_id("acme"), "sales")
        big = orjson.dumps({"action": "echo", "arguments": {"text": "x" * 10_000}})
        response = await harness.client.post(
            "/v1/commands", data=big, headers={**acme.headers, "Content-Type": "application/json"}
        )
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: the cap applies while reading
            for _ in range(10):
                yield b"x" * 1024

        chunked = await harness.client.post("/v1/commands", data=chunks(), headers=acme.headers)
        assert chunked.status == 413
        unauthenticated = await harness.client.post("/v1/commands", data=big)
        assert unauthenticated.status == 413


async def test_deep_json_is_400(harness, acme):
    deep: object = "leaf"
    for _ in range(40):
        deep = {"a": deep}
    response = await harness.client.post(
        "/v1/commands", json={"action": "echo", "arguments": deep}, headers=acme.headers
    )
    assert response.status == 400
    args17: object = 1
    for _ in range(17):
        args17 = [args17]
    response = await harness.client.post(
        "/v1/commands", json={"action": "echo", "arguments": {"x": args17}}, headers=acme.headers
    )
    assert response.status == 400
    very_deep = b"[" * 5000 + b"]" * 5000  # deeper than orjson's own recursion limit
    response = await harness.client.post("/v1/commands", data=very_deep, headers={**acme.headers, **JSON})
    assert response.status == 400
    # Said as it is: valid JSON, too deep (not "not valid JSON").
    assert (await response.json())["error"]["message"] == "the JSON body nests deeper than 20 levels"


async def test_malformed_json_and_wrong_shapes_are_400(harness, acme):
    for raw in (b"{", b"", b"null", b"[1, 2]", b'"echo"', b'{"action": "echo",}', b"\xff\xfe"):
        response = await harness.client.post("/v1/commands", data=raw, headers={**acme.headers, **JSON})
        assert response.status == 400, raw
        assert set((await response.json())["error"]) == {"code", "message"}
    for body in ({"arguments": {}}, {"action": "echo", "unknown": 1}, {"action": "echo", "deadline_seconds": -1}):
        response = await harness.client.post("/v1/commands", json=body, headers=acme.headers)
        assert response.status == 400, body
    bad_wait = await harness.client.get("/v1/commands/abcdefgh1234?wait=99", headers=acme.headers)
    assert bad_wait.status == 400


async def test_unknown_routes_and_methods_answer_json_errors(harness):
    missing = await harness.client.get("/nope")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"
    wrong = await harness.client.delete("/v1/commands")
    assert wrong.status == 405 and "Allow" in wrong.headers
    assert "error" in await wrong.json()


async def test_error_bodies_never_echo_a_submitted_secret(harness, acme):
    secret = "sk_live_SUPERSECRET_value"
    for body in ({"action": "bad name", "arguments": {"token": secret}},
                 {"action": "echo", "arguments": secret},
                 {"action": "echo", "idempotency_key": secret + " space"}):
        response = await harness.client.post("/v1/commands", json=body, headers=acme.headers)
        assert response.status == 400
        assert "SUPERSECRET" not in await response.text()


async def test_health_and_readiness(harness):
    assert (await harness.client.get("/healthz")).status == 200
    ready = await harness.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"producer": True, "directory": True, "results": True, "accepted": True}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"action": st.one_of(st.text(max_size=70), st.just("echo"), _json)},
        optional={
            "arguments": _json,
            "idempotency_key": st.one_of(st.text(max_size=300), _json),
            "deadline_seconds": st.one_of(st.floats(), st.integers(), _json),
            "tenant_id": st.text(max_size=10),
            "_meta": _json,
        },
    ).map(lambda v: json.dumps(v).encode()),
)


# The app's own event loop (aiokafka) uses `random` while hypothesis generates in its
# thread; hypothesis then blames the strategy. The strategies here use no randomness.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_fuzzed_submit_bodies_never_get_a_5xx(settings):
    # The app serves on this test's event loop; hypothesis drives a blocking client in a
    # thread, so every example is a real HTTP request to the real app.
    options = IngressOptions(rate_per_second=10_000, burst=10_000)
    async with IngressHarness(settings, options=options) as harness:
        acme = await harness.add_tenant(unique_id("acme"), "sales")
        url = harness.url + "/v1/commands"
        statuses: list[int] = []

        @hsettings(max_examples=150, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        @given(body=_bodies)
        def post(body: bytes) -> None:
            response = requests.post(url, data=body, headers={**acme.headers, **JSON}, timeout=10)
            statuses.append(response.status_code)
            assert response.status_code < 500, (body, response.text)
            assert "error" in response.json() or response.status_code in (200, 202)

        await asyncio.to_thread(post)
        assert len(statuses) >= 100
        assert any(s == 400 for s in statuses)


async def _raw(harness: IngressHarness, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """One HTTP/1.1 request written byte for byte (clients refuse non-UTF-8 headers)."""
    url = harness.client.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            head + b"Host: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    head_text, _, payload = raw.partition(b"\r\n\r\n")
    return int(head_text.split()[1]), orjson.loads(payload) if payload else {}


async def test_raw_bytes_in_headers_and_a_newline_in_ids_are_4xx(harness, acme):
    key = f"Authorization: Bearer {acme.api_key}\r\n".encode()
    status, body = await _raw(harness, b"GET /v1/admin/workspaces/a/b HTTP/1.1\r\nAuthorization: Bearer \xff\r\n")
    assert status == 401, body
    status, body = await _raw(
        harness, b"POST /v1/commands HTTP/1.1\r\n" + key + b"Idempotency-Key: \xff\r\n", b'{"action": "echo"}'
    )
    assert status == 400 and "Idempotency-Key" in body["error"]["message"], body
    call = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    status, body = await _raw(
        harness, b"POST /mcp/sales HTTP/1.1\r\n" + key + b"Accept: application/json, text/event-stream\r\n"
        + b"MCP-Protocol-Version: \xff\r\n", call,
    )
    assert status == 400 and body["error"]["code"] == -32022, body
    response = await harness.client.get(
        f"/v1/admin/workspaces/{acme.tenant_id}%0A/sales", headers=harness.admin_headers
    )
    assert response.status == 400, await response.text()
