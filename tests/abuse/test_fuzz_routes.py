"""Property-based fuzzing of every operation the OpenAPI document lists, and of every
stateless MCP method, on the real ingress process, with a tenant key: never a 5xx,
always a JSON answer, never another tenant's command in it, and the process survives."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from .conftest import CANARY, MODERN, Abuse, modern_headers, modern_meta

EXAMPLES = 200
PER_OPERATION = 15
_settings = hsettings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
_per_operation = hsettings(_settings, max_examples=PER_OPERATION)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
# Path segments a client can send: ids of both tenants, their workspaces, and junk.
_segments = st.sampled_from(["acme", "beta", "main", "other", "slack", "x" * 300, "..", "%00"]) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=40
)
_queries = st.dictionaries(st.sampled_from(["wait", "status", "connector", "limit", "view", "tenant"]),
                           st.sampled_from(["0", "1", "-1", "1e9", "nan", "30", "beta", "*", "admin"]) | st.text(
                               alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", max_size=10), max_size=3)
_MCP_METHODS = ["initialize", "ping", "tools/list", "tools/call", "tasks/get", "tasks/list", "tasks/cancel",
                "tasks/result", "resources/list", "prompts/list", "notifications/initialized", "nope/nope"]


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    # The live stream runs for 25 s a call: its scoping is tested on its own.
    return sorted((method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method in ("get", "post", "put", "delete") and path != "/v1/stream")


async def _betas_command(abuse: Abuse) -> str:
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands", body={"action": "daily_summary", "arguments": {"summary": "beta's own"}},
        headers=abuse.auth("beta"),
    )
    assert status == 202, reply
    return str(reply["command_id"])


async def test_fuzzed_calls_of_every_documented_operation_never_get_a_5xx_or_another_tenants_data(
    abuse: Abuse,
) -> None:
    status, document, _ = await abuse.request("GET", "/openapi.json")
    assert status == 200
    operations = _operations(document)
    assert len(operations) >= 15, operations
    secret_of_beta = await _betas_command(abuse)
    seen: dict[str, int] = {}

    def fuzz(method: str, template: str) -> None:
        @_per_operation
        @given(segments=st.lists(_segments, min_size=3, max_size=3), query=_queries, body=_json, beta_id=st.booleans())
        def call(segments: list[str], query: dict[str, str], body: Any, beta_id: bool) -> None:
            send(method, template, segments, query, body, beta_id)

        call()

    def send(method: str, template: str, segments: list[str], query: dict[str, str], body: Any, beta_id: bool) -> None:
        fill = iter(segments)
        # Sometimes beta's very command id, to try reading it with acme's key.
        path = re.sub(r"\{command_id\}", secret_of_beta if beta_id else next(fill), template)
        path = re.sub(r"\{[a-z_]+\}", lambda _: next(fill, "x"), path)
        response = requests.request(
            method, f"{abuse.url}{path}", params=query, timeout=40,
            data=json.dumps(body) if method in ("POST", "PUT") else None,
            headers={"Content-Type": "application/json", **abuse.auth("acme")},
        )
        seen[f"{method} {template} {response.status_code}"] = seen.get(f"{method} {template} {response.status_code}", 0) + 1
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        assert isinstance(response.json(), dict | list), response.text[:300]
        leaked = secret_of_beta in response.text or "beta's own" in response.text or CANARY in response.text
        assert not leaked, (method, path)

    for method, template in operations:  # every operation, each fuzzed on its own
        await asyncio.to_thread(fuzz, method, template)
    print(f"route fuzz over {len(operations)} operations: {dict(sorted(seen.items()))}")
    assert {key.rsplit(" ", 1)[0] for key in seen} == {f"{m} {t}" for m, t in operations}, seen
    assert abuse.system.dead() == []


async def test_fuzzed_stateless_mcp_methods_never_get_a_5xx(abuse: Abuse) -> None:
    url = f"{abuse.url}/mcp/main"
    outcomes: dict[str, int] = {}

    @_settings
    @given(method=st.sampled_from(_MCP_METHODS), params=_json, meta=st.booleans(), with_id=st.booleans())
    def call(method: str, params: Any, meta: bool, with_id: bool) -> None:
        if meta:
            params = {**(params if isinstance(params, dict) else {}), "_meta": modern_meta()}
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if with_id:
            body["id"] = 7
        response = requests.post(url, data=json.dumps(body), timeout=40, headers={
            "Content-Type": "application/json", **modern_headers(method), **abuse.auth("acme")})
        assert response.status_code < 500, (method, response.status_code, response.text[:300])
        if response.content:
            assert isinstance(response.json(), dict), response.text[:300]
        assert CANARY not in response.text
        outcomes[f"{method}:{response.status_code}"] = outcomes.get(f"{method}:{response.status_code}", 0) + 1

    await asyncio.to_thread(call)
    print(f"MCP ({MODERN}) method fuzz outcomes: {dict(sorted(outcomes.items()))}")
    assert any(key.endswith(":200") for key in outcomes), outcomes
    assert abuse.system.dead() == []
