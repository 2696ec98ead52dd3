"""Property-based fuzzing of the REST submit body and the MCP ``tools/call`` params on the
real ingress process: never a 5xx, always a well-formed answer, and the process survives."""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from .conftest import CANARY, TASKS, Abuse, Session

EXAMPLES = 150
_settings = hsettings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))

_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
_tenants = st.sampled_from(["acme", "beta", "canary", "", "ACME", "acme\x00"]) | st.text(max_size=12)
# What an HTTP client can send at all: visible ASCII, inner spaces.
_header_text = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ",
                       max_size=40).map(str.strip)
_arguments = st.one_of(
    _json,
    st.fixed_dictionaries({"summary": st.text(max_size=60)}, optional={"date": _json, "tenant_id": _tenants}),
)
_rest_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"action": st.one_of(st.just("daily_summary"), st.text(max_size=70), _json)},
        optional={
            "arguments": _arguments,
            "idempotency_key": st.one_of(st.text(max_size=300), _json),
            "deadline_seconds": st.one_of(st.floats(), st.integers(), _json),
            "tenant_id": _tenants,
            "space_id": st.text(max_size=10),
            "_meta": _json,
        },
    ).map(lambda v: json.dumps(v).encode()),
)
_ascii_tenants = st.sampled_from(["acme", "beta", "canary", "ACME", ""]) | _header_text
_rest_headers = st.fixed_dictionaries(
    {},
    optional={
        "Idempotency-Key": _header_text,
        "X-Switchyard-Space": st.sampled_from(["main", "other"]) | _header_text,
        "X-Switchyard-Tenant": _ascii_tenants,
        "X-Tenant-Id": _ascii_tenants,
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/json; charset=utf-8"]),
    },
)
_mcp_params = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"name": st.one_of(st.just("daily_summary"), st.text(max_size=70), _json)},
        optional={
            "arguments": _arguments,
            "_meta": st.one_of(_json, st.dictionaries(
                st.sampled_from(["switchyard/idempotency_key", "tenant_id", "switchyard/space_id",
                                 "progressToken", "io.modelcontextprotocol/related-task"]), _json, max_size=3)),
            "task": st.one_of(st.fixed_dictionaries({}, optional={"ttl": st.integers()}), _json),
        },
    ),
)
# Malformed ids are test_bodies' business; here the params must get past the envelope.
_ids = st.one_of(st.integers(min_value=-(2**53), max_value=2**53), st.text(max_size=20))


def _well_formed(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    body = response.json()
    assert isinstance(body, dict), body
    assert CANARY not in response.text


async def test_fuzzed_rest_submissions_never_get_a_5xx_or_crash_the_ingress(abuse: Abuse) -> None:
    url = f"{abuse.url}/v1/commands"
    statuses: dict[int, int] = {}

    @_settings
    # Half the examples carry no extra header, so bodies reach validation and publishing.
    @given(body=_rest_bodies, headers=st.one_of(st.just({}), _rest_headers))
    # Most fuzzed calls are refused at the edge now (unknown action, arguments off the
    # schema): one valid call is always among them, so the accepting path is reached too.
    @example(body=json.dumps({"action": "daily_summary", "arguments": {"summary": "fuzz"}}).encode(), headers={})
    def post(body: bytes, headers: dict[str, str]) -> None:
        response = requests.post(url, data=body, timeout=40,
                                 headers={"Content-Type": "application/json", **headers, **abuse.auth("acme")})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        _well_formed(response)
        if response.status_code >= 400:
            assert "error" in response.json()

    await asyncio.to_thread(post)
    print(f"REST fuzz statuses: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= EXAMPLES
    assert 400 in statuses and (202 in statuses or 200 in statuses), statuses  # both paths were reached
    assert abuse.system.dead() == []


async def test_fuzzed_mcp_tool_call_params_never_get_a_5xx_or_crash_the_ingress(abuse: Abuse) -> None:
    session = await Session(abuse, "acme").open()
    url = f"{abuse.url}/mcp/main"
    headers = {**session.headers(), "Content-Type": "application/json"}
    outcomes: dict[str, int] = {}

    @_settings
    @given(params=_mcp_params, request_id=_ids)
    def call(params: Any, request_id: Any) -> None:
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        response = requests.post(url, data=json.dumps(body), headers=headers, timeout=40)
        _well_formed(response)
        reply = response.json()
        assert ("result" in reply) != ("error" in reply), reply
        kind = f"{response.status_code}:{reply['error']['code'] if 'error' in reply else 'result'}"
        outcomes[kind] = outcomes.get(kind, 0) + 1

    await asyncio.to_thread(call)
    print(f"MCP ({TASKS}) tools/call fuzz outcomes: {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) >= EXAMPLES
    assert any(kind.endswith(":result") for kind in outcomes), outcomes
    assert abuse.system.dead() == []


@pytest.mark.parametrize("tenant", ["acme"])
async def test_the_ingress_still_serves_after_the_fuzzing(abuse: Abuse, tenant: str) -> None:
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands", body={"action": "daily_summary", "arguments": {"summary": "after fuzz"}},
        headers=abuse.auth(tenant),
    )
    assert status == 202, reply
    status, reply, _ = await abuse.request("GET", f"/v1/commands/{reply['command_id']}?wait=20",
                                           headers=abuse.auth(tenant))
    assert reply["status"] == "succeeded", reply
