"""Replayed idempotency keys publish once, however and however often they are replayed."""

from __future__ import annotations

import asyncio
import uuid

from .conftest import Abuse, modern_call


async def test_a_replayed_rest_idempotency_key_publishes_once(abuse: Abuse) -> None:
    key = f"replay-{uuid.uuid4().hex}"
    body = {"action": "daily_summary", "arguments": {"summary": "once"}}
    headers = {**abuse.auth("acme"), "Idempotency-Key": key}
    before = await abuse.published()
    first = await abuse.request("POST", "/v1/commands", body=body, headers=headers)
    assert first[0] == 202, first[1]
    command_id = first[1]["command_id"]
    # Sequential and concurrent replays, by header, by body field and inside a batch.
    replays = [abuse.request("POST", "/v1/commands", body=body, headers=headers) for _ in range(10)]
    replays.append(abuse.request("POST", "/v1/commands", body={**body, "idempotency_key": key},
                                 headers=abuse.auth("acme")))
    answers = await asyncio.gather(*replays)
    assert {status for status, _, _ in answers} == {200}, answers
    assert {reply["command_id"] for _, reply, _ in answers} == {command_id}
    assert all(reply["replayed"] for _, reply, _ in answers)
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands:batch", body={"items": [{**body, "idempotency_key": key}] * 3},
        headers=abuse.auth("acme"),
    )
    assert status == 200 and {item["command_id"] for item in reply["items"]} == {command_id}, reply
    # After the command finished, a replay still publishes nothing.
    status, reply, _ = await abuse.request("GET", f"/v1/commands/{command_id}?wait=20", headers=abuse.auth("acme"))
    assert reply["status"] == "succeeded", reply
    status, reply, _ = await abuse.request("POST", "/v1/commands", body=body, headers=headers)
    assert status == 200 and reply["command_id"] == command_id
    assert await abuse.published() == before + 1


async def test_an_idempotency_key_reused_for_another_command_is_409_and_publishes_nothing(abuse: Abuse) -> None:
    key = f"reuse-{uuid.uuid4().hex}"
    headers = {**abuse.auth("acme"), "Idempotency-Key": key}
    status, _, _ = await abuse.request(
        "POST", "/v1/commands", body={"action": "daily_summary", "arguments": {"summary": "a"}}, headers=headers
    )
    assert status == 202
    before = await abuse.published()
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands", body={"action": "daily_summary", "arguments": {"summary": "b"}}, headers=headers
    )
    assert status == 409, reply
    assert await abuse.published() == before


async def test_the_same_key_of_two_tenants_names_two_commands(abuse: Abuse) -> None:
    key = f"shared-{uuid.uuid4().hex}"
    body = {"action": "daily_summary", "arguments": {"summary": "same key"}, "idempotency_key": key}
    before = await abuse.published()
    a = await abuse.request("POST", "/v1/commands", body=body, headers=abuse.auth("acme"))
    b = await abuse.request("POST", "/v1/commands", body=body, headers=abuse.auth("beta"))
    assert a[0] == b[0] == 202 and a[1]["command_id"] != b[1]["command_id"]
    assert await abuse.published() == before + 2


async def test_a_replayed_mcp_idempotency_key_publishes_once(abuse: Abuse) -> None:
    key = f"mcp-{uuid.uuid4().hex}"
    params = {"name": "daily_summary", "arguments": {"summary": "mcp once"},
              "_meta": {"switchyard/idempotency_key": key}}
    before = await abuse.published()
    answers = await asyncio.gather(*(modern_call(abuse, "acme", "tools/call", params) for _ in range(5)))
    assert {status for status, _ in answers} == {200}, answers
    ids = {reply["result"]["_meta"]["switchyard/command_id"] for _, reply in answers}
    assert len(ids) == 1, ids
    assert all(reply["result"]["isError"] is False for _, reply in answers)
    assert await abuse.published() == before + 1
