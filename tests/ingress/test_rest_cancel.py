"""``POST /v1/commands/{id}:cancel`` against the real broker: what it publishes, and
when it refuses (unknown, another tenant's or workspace's, finished, over the rate)."""

from __future__ import annotations

import asyncio

import pytest
from test_rest import assert_documented

from core.kafka import headers_dict
from ingress.app import IngressOptions
from ingress.testing import IngressHarness, read_topic, unique_id
from schemas import TASK_CANCEL_KIND, Headers, TaskCancel


async def _submit(harness: IngressHarness, headers: dict[str, str], path: str = "/v1/commands") -> dict[str, str]:
    response = await harness.client.post(path, json={"action": "echo"}, headers=headers)
    assert response.status == 202
    return await response.json()


async def test_a_cancel_is_published_for_the_workers_and_after_the_command_for_the_replicas(harness, acme):
    # No responder: the command stays pending.
    accepted = await _submit(harness, acme.headers)
    command_id = accepted["command_id"]
    path = f"/v1/commands/{command_id}:cancel"
    response = await harness.client.post(path, headers=acme.headers)

    assert response.status == 202
    body = await response.json()
    assert body == {"command_id": command_id, "status": "pending", "cancel_requested": True,
                    "status_url": f"/v1/commands/{command_id}"}  # fmt: skip
    await assert_documented(harness, "/v1/commands/{command_id}:cancel", 202, body)
    topics = harness.settings.topics
    (cancel,) = await read_topic(harness.settings, topics.cancels)
    headers = headers_dict(cancel.headers)
    assert cancel.key == acme.tenant_id.encode()
    assert (headers[Headers.KIND], headers[Headers.TENANT], headers[Headers.COMMAND_ID]) == (
        TASK_CANCEL_KIND, acme.tenant_id, command_id
    )
    parsed = TaskCancel.from_bytes(cancel.value)
    assert (parsed.tenant_id, parsed.space_id, parsed.command_id) == (acme.tenant_id, "sales", command_id)
    # On the commands topic too, after the command (every replica's task view).
    kinds = [headers_dict(r.headers)[Headers.KIND] for r in await read_topic(harness.settings, topics.commands)]
    assert kinds == ["command", TASK_CANCEL_KIND]
    # Still pending until a worker's Result says what came of it; asking again is fine.
    polled = await harness.client.get(body["status_url"], headers=acme.headers)
    assert (await polled.json())["status"] == "pending"
    assert (await harness.client.post(path, headers=acme.headers)).status == 202


async def test_a_cancel_of_a_command_in_a_workspace_path_names_that_path(harness, acme):
    accepted = await _submit(harness, acme.headers, "/v1/spaces/sales/commands")
    command_id = accepted["command_id"]
    response = await harness.client.post(f"/v1/spaces/sales/commands/{command_id}:cancel", headers=acme.headers)
    assert response.status == 202
    assert (await response.json())["status_url"] == f"/v1/spaces/sales/commands/{command_id}"


async def test_unknown_foreign_and_misshapen_ids_are_404_and_publish_nothing(harness, acme, beta):
    accepted = await _submit(harness, acme.headers)
    support = await harness.add_tenant(acme.tenant_id, "support")
    for headers, command_id in (
        (acme.headers, "c" + "0" * 20),  # never submitted
        (acme.headers, "no.such/id"[:5]),  # not an id's shape
        (beta.headers, accepted["command_id"]),  # another tenant's
        (support.headers, accepted["command_id"]),  # another workspace's
    ):
        response = await harness.client.post(f"/v1/commands/{command_id}:cancel", headers=headers)
        assert response.status == 404, command_id
        assert (await response.json())["error"]["code"] == "not_found"
    assert await read_topic(harness.settings, harness.settings.topics.cancels) == []


async def test_a_finished_command_is_a_409_naming_its_status(harness, acme, responder):
    accepted = await _submit(harness, acme.headers)
    polled = await harness.client.get(accepted["status_url"] + "?wait=20", headers=acme.headers)
    assert (await polled.json())["status"] == "succeeded"

    response = await harness.client.post(f"/v1/commands/{accepted['command_id']}:cancel", headers=acme.headers)
    assert response.status == 409
    error = (await response.json())["error"]
    assert (error["code"], error["status"]) == ("conflict", "succeeded")
    assert await read_topic(harness.settings, harness.settings.topics.cancels) == []


async def test_a_command_another_replica_accepted_can_be_cancelled_here(settings, harness, acme):
    accepted = await _submit(harness, acme.headers)
    async with IngressHarness(settings) as other:
        path = f"/v1/commands/{accepted['command_id']}:cancel"
        async with asyncio.timeout(20):
            while (response := await other.client.post(path, headers=acme.headers)).status != 202:
                assert response.status == 404  # until its commands follower has read it
                await asyncio.sleep(0.1)


@pytest.mark.parametrize("options", [IngressOptions(rate_per_second=1.0, burst=2)])
async def test_cancels_count_against_the_tenants_edge_rate(settings, options):
    async with IngressHarness(settings, options=options) as harness:
        tenant = await harness.add_tenant(unique_id("noisy"), "sales")
        accepted = await _submit(harness, tenant.headers)
        path = f"/v1/commands/{accepted['command_id']}:cancel"
        statuses = [(await harness.client.post(path, headers=tenant.headers)).status for _ in range(3)]
        assert statuses == [202, 429, 429]
        assert len(await read_topic(harness.settings, harness.settings.topics.cancels)) == 1


async def test_a_batch_of_cancellations_answers_each_as_a_single_cancel_would(harness, acme, beta):
    finished = await _submit(harness, acme.headers)
    async with harness.responder():
        polled = await harness.client.get(finished["status_url"] + "?wait=20", headers=acme.headers)
        assert (await polled.json())["status"] == "succeeded"
    pending = await _submit(harness, acme.headers)  # the responder has stopped: stays pending
    foreign = await _submit(harness, beta.headers)
    ids = [pending["command_id"], finished["command_id"], "c" + "0" * 20, foreign["command_id"]]

    response = await harness.client.post("/v1/commands:cancel", json={"command_ids": ids}, headers=acme.headers)
    assert response.status == 200
    body = await response.json()
    await assert_documented(harness, "/v1/commands:cancel", 200, body)
    assert (body["cancelled"], body["failed"]) == (1, 3)
    assert [item["status_code"] for item in body["items"]] == [202, 409, 404, 404]
    assert body["items"][0] == {"index": 0, "status_code": 202, "command_id": pending["command_id"],
                                "status": "pending", "cancel_requested": True,
                                "status_url": pending["status_url"]}  # fmt: skip
    assert body["items"][1]["error"]["status"] == "succeeded"
    (cancel,) = await read_topic(harness.settings, harness.settings.topics.cancels)
    assert headers_dict(cancel.headers)[Headers.COMMAND_ID] == pending["command_id"]


async def test_a_batch_that_cancels_nothing_answers_its_first_items_status(harness, acme):
    response = await harness.client.post(
        "/v1/commands:cancel", json={"command_ids": ["c" + "1" * 20, "c" + "2" * 20]}, headers=acme.headers
    )
    assert response.status == 404
    body = await response.json()
    assert body["cancelled"] == 0 and [i["status_code"] for i in body["items"]] == [404, 404]
    await assert_documented(harness, "/v1/commands:cancel", 404, body)


@pytest.mark.parametrize(
    "body",
    [{}, {"command_ids": []}, {"command_ids": "c123"}, {"command_ids": [1]}, {"command_ids": ["c1"] * 501},
     {"command_ids": ["c1"], "extra": True}, [], [{}], None],
)
async def test_a_malformed_batch_of_cancellations_is_a_400_and_publishes_nothing(harness, acme, body):
    response = await harness.client.post("/v1/commands:cancel", json=body, headers=acme.headers)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "bad_request"
    assert await read_topic(harness.settings, harness.settings.topics.cancels) == []


@pytest.mark.parametrize("options", [IngressOptions(rate_per_second=1.0, burst=3)])
async def test_a_batch_of_cancellations_costs_one_token_each(settings, options):
    async with IngressHarness(settings, options=options) as harness:
        tenant = await harness.add_tenant(unique_id("noisy"), "sales")
        ids = [(await _submit(harness, tenant.headers))["command_id"] for _ in range(2)]  # 2 of 3 tokens
        response = await harness.client.post("/v1/commands:cancel", json={"command_ids": ids}, headers=tenant.headers)
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        assert await read_topic(harness.settings, harness.settings.topics.cancels) == []
