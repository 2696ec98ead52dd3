"""A request cannot act for another tenant: any claim of one (header, body field, ``_meta``,
tool arguments) is refused with 403 and nothing reaches the commands topic."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Abuse, modern_call

SUMMARY = {"summary": "spoof attempt"}

REST_SPOOFS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "header X-Switchyard-Tenant": ({"X-Switchyard-Tenant": "beta"}, {"action": "daily_summary", "arguments": SUMMARY}),
    "header X-Tenant-Id": ({"X-Tenant-Id": "beta"}, {"action": "daily_summary", "arguments": SUMMARY}),
    "body tenant_id": ({}, {"action": "daily_summary", "arguments": SUMMARY, "tenant_id": "beta"}),
    "body tenantId": ({}, {"action": "daily_summary", "arguments": SUMMARY, "tenantId": "beta"}),
    "body _meta": ({}, {"action": "daily_summary", "arguments": SUMMARY, "_meta": {"tenant_id": "beta"}}),
    "tool arguments": ({}, {"action": "daily_summary", "arguments": {**SUMMARY, "tenant_id": "beta"}}),
    "arguments _meta": ({}, {"action": "daily_summary", "arguments": {**SUMMARY, "_meta": {"tenant": "beta"}}}),
}


@pytest.mark.parametrize("where", list(REST_SPOOFS))
async def test_rest_submit_claiming_another_tenant_is_403_and_publishes_nothing(abuse: Abuse, where: str) -> None:
    headers, body = REST_SPOOFS[where]
    before = await abuse.published()
    status, reply, _ = await abuse.request("POST", "/v1/commands", body=body, headers={**abuse.auth("acme"), **headers})
    assert status == 403, reply
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands:batch", body={"items": [body]}, headers={**abuse.auth("acme"), **headers}
    )
    # A header claim refuses the whole batch; a body claim refuses its item.
    assert status == 403 or reply["items"][0]["status_code"] == 403, reply
    assert await abuse.published() == before


async def test_claiming_ones_own_tenant_is_allowed(abuse: Abuse) -> None:
    # The control for the refusals above: the same shapes naming the key's own tenant pass.
    before = await abuse.published()
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands", headers={**abuse.auth("acme"), "X-Switchyard-Tenant": "acme"},
        body={"action": "daily_summary", "arguments": SUMMARY, "tenant_id": "acme"},
    )
    assert status == 202, reply
    assert await abuse.published() == before + 1


MCP_SPOOFS = [
    pytest.param({"X-Switchyard-Tenant": "beta"}, {}, id="header X-Switchyard-Tenant"),
    pytest.param({"X-Tenant-Id": "beta"}, {}, id="header X-Tenant-Id"),
    pytest.param({}, {"tenant_id": "beta"}, id="params tenant_id"),
    pytest.param({}, {"_meta": {"tenant_id": "beta"}}, id="_meta tenant_id"),
    pytest.param({}, {"_meta": {"switchyard/tenant_id": "beta"}}, id="_meta switchyard/tenant_id"),
    pytest.param({}, {"arguments": {**SUMMARY, "tenant_id": "beta"}}, id="tool arguments"),
    pytest.param({}, {"arguments": {**SUMMARY, "tenantId": "beta"}}, id="tool arguments tenantId"),
]


@pytest.mark.parametrize(("headers", "extra"), MCP_SPOOFS)
async def test_mcp_tool_call_claiming_another_tenant_is_refused_and_publishes_nothing(
    abuse: Abuse, headers: dict[str, str], extra: dict[str, Any]
) -> None:
    before = await abuse.published()
    params = {"name": "daily_summary", "arguments": SUMMARY, **extra}
    status, reply = await modern_call(abuse, "acme", "tools/call", params, headers=headers)
    # A JSON-RPC error with 200, as every refusal of a call (clients read no error from a 403).
    assert status == 200, reply
    assert reply["error"]["code"] == -32011, reply
    assert await abuse.published() == before


async def test_a_batch_claiming_another_tenant_on_its_envelope_or_one_item_runs_nothing_for_it(abuse: Abuse) -> None:
    good = {"action": "daily_summary", "arguments": SUMMARY}
    before = await abuse.published()
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands:batch", body={"items": [good], "tenant_id": "beta"}, headers=abuse.auth("acme")
    )
    assert status == 403, reply
    assert await abuse.published() == before
    # A mixed batch: the honest item runs (for acme), the claiming one is refused.
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands:batch", body={"items": [good, {**good, "tenant_id": "beta"}]}, headers=abuse.auth("acme")
    )
    assert status == 200 and [item["status_code"] for item in reply["items"]] == [202, 403], reply
    assert await abuse.published() == before + 1
    status, accepted, _ = await abuse.request(
        "GET", f"/v1/commands/{reply['items'][0]['command_id']}", headers=abuse.auth("beta")
    )
    assert status == 404  # what ran is acme's: beta cannot even see it
