"""The REST API against the real broker, answered by a fake responder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import jsonschema
import pytest

from core.kafka import headers_dict, make_admin, start_client
from ingress._state import STATE
from ingress.app import IngressOptions
from ingress.pipeline import command_id_for
from ingress.testing import IngressHarness, TenantHandle, echo_action, read_topic, unique_id
from schemas import ActionConfig, Command, Headers


async def assert_documented(
    harness: IngressHarness, path: str, status: int, body: object, headers: Mapping[str, str] | None = None
) -> None:
    """``body`` (and ``headers``, when given) are what the OpenAPI document promises for a
    POST to ``path`` answered ``status``: every header it declares is sent."""
    document = await (await harness.client.get("/openapi.json")).json()
    answer = document["paths"][path]["post"]["responses"][str(status)]
    schema = {**answer["content"]["application/json"]["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)
    if headers is not None:
        assert set(answer.get("headers", {})) <= set(headers), (answer.get("headers"), dict(headers))


async def commands_with_id(harness: IngressHarness, command_id: str) -> list[Command]:
    records = await read_topic(harness.settings, harness.settings.topics.commands)
    commands = [Command.from_bytes(r.value) for r in records]
    return [c for c in commands if c.command_id == command_id]


async def test_submit_answers_202_and_get_with_wait_returns_the_result(harness, acme, responder):
    response = await harness.client.post(
        "/v1/commands", json={"action": "echo", "arguments": {"text": "hi"}}, headers=acme.headers
    )
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "accepted" and body["replayed"] is False
    assert body["status_url"] == f"/v1/commands/{body['command_id']}"
    await assert_documented(harness, "/v1/commands", 202, body, response.headers)
    polled = await harness.client.get(body["status_url"] + "?wait=20", headers=acme.headers)
    assert polled.status == 200
    status = await polled.json()
    assert status["status"] == "succeeded"
    assert status["result"]["output"] == {"echo": {"text": "hi"}}
    assert status["result"]["tenant_id"] == acme.tenant_id


async def test_published_command_carries_identity_headers_and_the_ingress_span(harness, acme):
    response = await harness.client.post(
        "/v1/spaces/sales/commands", json={"action": "echo", "arguments": {}}, headers=acme.headers
    )
    assert response.status == 202
    command_id = (await response.json())["command_id"]
    records = await read_topic(harness.settings, harness.settings.topics.commands)
    (record,) = records
    headers = headers_dict(record.headers)
    command = Command.from_bytes(record.value)
    assert record.key == acme.tenant_id.encode()
    assert headers[Headers.TENANT] == acme.tenant_id
    assert headers[Headers.COMMAND_ID] == command_id
    assert headers[Headers.KIND] == "command" and headers[Headers.SCHEMA]
    (span,) = command.spans
    assert span.kind == "producer" and span.trace_id in headers[Headers.TRACEPARENT]
    assert span.span_id in headers[Headers.TRACEPARENT]  # downstream spans are its children
    assert (command.tenant_id, command.space_id, command.user_id) == (acme.tenant_id, "sales", "user1")


async def test_command_without_result_is_pending_then_unknown_ids_are_404(harness, acme):
    response = await harness.client.post(
        "/v1/commands", json={"action": "echo"}, headers=acme.headers
    )
    url = (await response.json())["status_url"]
    pending = await harness.client.get(url, headers=acme.headers)
    assert pending.status == 200 and (await pending.json())["status"] == "pending"
    missing = await harness.client.get("/v1/commands/abcdefgh12345678?wait=0.2", headers=acme.headers)
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    # An id no command can have is not waited for (it held the request the whole wait).
    async with asyncio.timeout(10):
        malformed = await harness.client.get("/v1/commands/zz?wait=30", headers=acme.headers)
    assert malformed.status == 404


async def test_arguments_over_their_limit_are_a_400_that_says_the_limit(harness, acme):
    body = {"action": "echo", "arguments": {"text": "x" * (256 * 1024)}}
    response = await harness.client.post("/v1/commands", json=body, headers=acme.headers)
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert message.startswith("arguments: JSON is ") and "more than the 262144 allowed" in message, message


async def test_an_action_the_workspace_does_not_run_or_bad_arguments_are_a_400_and_nothing_is_published(
    harness, acme
):
    # As on MCP: refused at once, nothing published, the key not used up (before, 202
    # and a rejected Result from the router, the key spent on it).
    before = len(await read_topic(harness.settings, harness.settings.topics.commands))
    unknown = await harness.client.post("/v1/commands", json={"action": "nope", "idempotency_key": "k1"},
                                        headers=acme.headers)
    assert unknown.status == 400
    assert (await unknown.json())["error"] == {"code": "unknown_action",
                                              "message": "no action 'nope' in this workspace"}
    bad = await harness.client.post("/v1/commands", json={"action": "echo", "arguments": {"text": 5}},
                                    headers=acme.headers)
    assert bad.status == 400
    error = (await bad.json())["error"]
    assert error["code"] == "invalid_arguments" and error["message"].startswith("arguments at text: ")
    items = [{"action": "echo"}, {"action": "nope"}, {"action": "echo", "arguments": {"text": []}}]
    batch = await harness.client.post("/v1/commands:batch", json={"items": items}, headers=acme.headers)
    body = await batch.json()
    assert batch.status == 200 and [i["status_code"] for i in body["items"]] == [202, 400, 400]
    assert [i["error"]["code"] for i in body["items"][1:]] == ["unknown_action", "invalid_arguments"]
    assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == before + 1
    # The key of a refused call is free for the call meant.
    fixed = await harness.client.post("/v1/commands", json={"action": "echo", "idempotency_key": "k1"},
                                      headers=acme.headers)
    assert fixed.status == 202


async def test_a_replay_is_answered_as_one_after_its_action_was_removed(harness):
    tenant = await harness.add_tenant(unique_id("acme"), "sales")
    payload = {"action": "echo", "arguments": {"text": "x"}, "idempotency_key": "order-7"}
    first = await harness.client.post("/v1/commands", json=payload, headers=tenant.headers)
    assert first.status == 202
    await harness.add_tenant(tenant.tenant_id, "sales", actions=[echo_action("other")])  # echo removed
    replay = await harness.client.post("/v1/commands", json=payload, headers=tenant.headers)
    assert replay.status == 200 and (await replay.json())["command_id"] == (await first.json())["command_id"]
    fresh = await harness.client.post("/v1/commands", json={**payload, "idempotency_key": "order-8"},
                                      headers=tenant.headers)
    assert fresh.status == 400


async def test_a_replay_of_a_command_another_replica_accepted_is_not_refused_at_the_edge(harness):
    # Replica A accepted it; the action was removed; the client retries on replica B,
    # which never saw the call: B must not answer 400 (the key "free") for a command
    # that runs. It publishes it again and the router's duplicate check answers.
    tenant = await harness.add_tenant(unique_id("acme"), "sales")
    payload = {"action": "echo", "arguments": {"text": "x"}, "idempotency_key": "order-9"}
    async with IngressHarness(harness.settings) as replica_a:
        first = await replica_a.client.post("/v1/commands", json=payload, headers=tenant.headers)
        assert first.status == 202
        command_id = (await first.json())["command_id"]
    accepted = harness.client.app[STATE].accepted
    async with asyncio.timeout(20):
        while accepted.owner(command_id) is None:  # noqa: ASYNC110 - this replica's follower reads it
            await asyncio.sleep(0.05)
    await harness.add_tenant(tenant.tenant_id, "sales", actions=[echo_action("other")])  # echo removed
    replay = await harness.client.post("/v1/commands", json=payload, headers=tenant.headers)
    assert replay.status in (200, 202) and (await replay.json())["command_id"] == command_id


async def test_replayed_idempotency_key_returns_the_same_id_and_publishes_once(harness, acme):
    payload = {"action": "echo", "arguments": {"text": "once"}, "idempotency_key": "order-42"}
    first = await harness.client.post("/v1/commands", json=payload, headers=acme.headers)
    assert first.status == 202
    command_id = (await first.json())["command_id"]
    by_header = {**acme.headers, "Idempotency-Key": "order-42"}
    replays = await asyncio.gather(
        harness.client.post("/v1/commands", json=payload, headers=acme.headers),
        *[
            harness.client.post(
                "/v1/commands", json={"action": "echo", "arguments": {"text": "once"}},
                headers=by_header,
            )
            for _ in range(4)
        ],
    )
    for replay in replays:
        assert replay.status == 200
        body = await replay.json()
        assert body["command_id"] == command_id and body["replayed"] is True
    assert len(await commands_with_id(harness, command_id)) == 1


async def test_concurrent_first_submits_of_one_key_publish_once(harness, acme):
    payload = {"action": "echo", "arguments": {}, "idempotency_key": "race-1"}
    responses = await asyncio.gather(
        *[harness.client.post("/v1/commands", json=payload, headers=acme.headers) for _ in range(8)]
    )
    bodies = [await r.json() for r in responses]
    assert sorted(r.status for r in responses) == [200] * 7 + [202]
    assert len({b["command_id"] for b in bodies}) == 1
    assert len(await commands_with_id(harness, bodies[0]["command_id"])) == 1


async def test_idempotency_key_reused_for_another_command_is_a_409(harness, acme):
    first = {"action": "echo", "arguments": {"text": "a"}, "idempotency_key": "k-1"}
    accepted = await harness.client.post("/v1/commands", json=first, headers=acme.headers)
    assert accepted.status == 202
    other = {**first, "arguments": {"text": "b"}}
    response = await harness.client.post("/v1/commands", json=other, headers=acme.headers)
    assert response.status == 409
    # It names the command the key already stands for (the caller's own), to read its status.
    assert (await response.json())["error"]["command_id"] == (await accepted.json())["command_id"]


async def test_a_replica_knowing_only_the_result_refuses_its_key_for_another_action(
    settings, harness, acme, responder
):
    first = {"action": "echo", "arguments": {"text": "a"}, "idempotency_key": "k-done"}
    accepted = await (await harness.client.post("/v1/commands", json=first, headers=acme.headers)).json()
    support = await harness.add_tenant(acme.tenant_id, "support")
    async with IngressHarness(settings) as other:
        # The other replica never saw the command, only (once it arrives) its Result.
        done = await other.client.get(accepted["status_url"] + "?wait=20", headers=acme.headers)
        assert (await done.json())["status"] == "succeeded"
        replay = await other.client.post("/v1/commands", json=first, headers=acme.headers)
        assert replay.status == 200 and (await replay.json())["command_id"] == accepted["command_id"]
        other_action = await other.client.post(
            "/v1/commands", json={**first, "action": "shout"}, headers=acme.headers
        )
        assert other_action.status == 409
        # Keys are per workspace: the same key in another workspace is another command.
        other_space = await other.client.post("/v1/commands", json=first, headers=support.headers)
        assert other_space.status == 202
        assert (await other_space.json())["command_id"] != accepted["command_id"]
    assert len(await commands_with_id(harness, accepted["command_id"])) == 1


async def test_one_idempotency_key_in_two_workspaces_gives_two_commands(harness, acme, responder):
    support = await harness.add_tenant(acme.tenant_id, "support")
    payload = {"action": "echo", "arguments": {"text": "a"}, "idempotency_key": "daily"}
    a = await harness.client.post("/v1/commands", json=payload, headers=acme.headers)
    b = await harness.client.post("/v1/commands", json=payload, headers=support.headers)
    assert a.status == 202 and b.status == 202
    first, second = await a.json(), await b.json()
    assert first["command_id"] != second["command_id"]
    for accepted, key in ((first, acme), (second, support)):
        done = await harness.client.get(accepted["status_url"] + "?wait=20", headers=key.headers)
        assert (await done.json())["status"] == "succeeded"
        published = await commands_with_id(harness, accepted["command_id"])
        assert [(c.space_id, c.keyed_per_workspace()) for c in published] == [(key.space_id, True)]
    replay = await harness.client.post("/v1/commands", json=payload, headers=support.headers)
    assert replay.status == 200 and (await replay.json())["command_id"] == second["command_id"]


async def test_a_command_still_running_reads_as_pending_on_every_replica(settings, harness, acme, beta):
    # No responder: the command stays pending. The load balancer sends the poll elsewhere.
    accepted = await (await harness.client.post(
        "/v1/commands", json={"action": "echo"}, headers=acme.headers
    )).json()
    support = await harness.add_tenant(acme.tenant_id, "support")
    async with IngressHarness(settings) as other:
        async with asyncio.timeout(20):
            while (polled := await other.client.get(accepted["status_url"], headers=acme.headers)).status != 200:
                assert polled.status == 404  # until its commands follower has read it
                await asyncio.sleep(0.1)
        assert await polled.json() == {"command_id": accepted["command_id"], "status": "pending"}
        for stranger in (beta, support):  # another tenant's, another workspace's: unknown
            assert (await other.client.get(accepted["status_url"], headers=stranger.headers)).status == 404


async def test_same_idempotency_key_of_two_tenants_gives_two_commands(harness, acme, beta):
    payload = {"action": "echo", "idempotency_key": "shared-key"}
    a = await (await harness.client.post("/v1/commands", json=payload, headers=acme.headers)).json()
    b = await (await harness.client.post("/v1/commands", json=payload, headers=beta.headers)).json()
    assert a["command_id"] != b["command_id"]
    assert a["replayed"] is False and b["replayed"] is False


async def test_batch_accepts_valid_items_and_reports_bad_ones_without_poisoning_others(
    harness, acme, responder
):
    items = [{"action": "echo", "arguments": {"n": i}, "idempotency_key": f"b-{i}"} for i in range(20)]
    items[3] = {"action": "bad action name!", "arguments": {}}
    items[7] = {"action": "echo", "arguments": "not an object"}
    items[9] = {"action": "echo", "tenant_id": "someone_else"}
    items[11] = dict(items[10])  # the same key twice in one batch: published once
    response = await harness.client.post(
        "/v1/commands:batch", json={"items": items}, headers=acme.headers
    )
    assert response.status == 200
    body = await response.json()
    codes = [item["status_code"] for item in body["items"]]
    assert codes[3] == 400 and codes[7] == 400 and codes[9] == 403
    assert codes[10] == 202 and codes[11] == 200
    assert body["items"][10]["command_id"] == body["items"][11]["command_id"]
    assert body["accepted"] == 17 and body["failed"] == 3
    records = await read_topic(harness.settings, harness.settings.topics.commands)
    assert len(records) == 16
    last = body["items"][19]
    done = await harness.client.get(last["status_url"] + "?wait=20", headers=acme.headers)
    assert (await done.json())["result"]["output"] == {"echo": {"n": 19}}


async def test_batch_over_the_item_cap_is_a_400(harness, acme):
    items = [{"action": "echo"}] * 501
    response = await harness.client.post("/v1/commands:batch", json={"items": items}, headers=acme.headers)
    assert response.status == 400
    assert await read_topic(harness.settings, harness.settings.topics.commands) == []


async def test_tenant_b_cannot_read_tenant_a_command(harness, acme, beta, responder):
    response = await harness.client.post(
        "/v1/commands", json={"action": "echo", "arguments": {"text": "secret plan"}},
        headers=acme.headers,
    )
    url = (await response.json())["status_url"]
    own = await harness.client.get(url + "?wait=20", headers=acme.headers)
    assert (await own.json())["status"] == "succeeded"
    for query in ("", "?wait=0.5"):
        foreign = await harness.client.get(url + query, headers=beta.headers)
        assert foreign.status == 404
        assert "secret plan" not in await foreign.text()
    assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == 1


async def test_another_workspace_of_the_same_tenant_cannot_read_the_command(harness, acme):
    other = await harness.add_tenant(acme.tenant_id, "support")
    response = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
    url = (await response.json())["status_url"]
    assert (await harness.client.get(url, headers=other.headers)).status == 404


@pytest.mark.parametrize("options", [IngressOptions(rate_per_second=1.0, burst=3)])
async def test_tenant_over_its_edge_rate_gets_429_with_retry_after(settings, options):
    async with IngressHarness(settings, options=options) as harness:
        noisy = await harness.add_tenant(unique_id("noisy"), "sales")
        quiet = await harness.add_tenant(unique_id("quiet"), "sales")
        statuses = []
        for _ in range(5):
            r = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=noisy.headers)
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
        assert statuses == [202, 202, 202, 429, 429]
        other = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=quiet.headers)
        assert other.status == 202
        assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == 4
        # Seen per tenant by whoever operates the edge.
        text = await (await harness.client.get("/metrics", headers=harness.admin_headers)).text()
        assert f'switchyard_edge_rate_limited_total{{tenant="{noisy.tenant_id}"}} 2.0' in text
        assert f'switchyard_edge_rate_limited_total{{tenant="{quiet.tenant_id}"}}' not in text


async def test_many_concurrent_submits_share_producer_batches(harness, acme: TenantHandle):
    # Count the produce requests the ingress's real producer makes to the broker.
    client = harness.client.app[STATE].pipeline.producer.client
    produce_requests = 0
    send = client.send

    async def counting_send(node_id, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal produce_requests
        produce_requests += type(request).__name__.startswith("ProduceRequest")
        return await send(node_id, request, *args, **kwargs)

    client.send = counting_send
    try:
        responses = await asyncio.gather(
            *[
                harness.client.post("/v1/commands", json={"action": "echo", "arguments": {"i": i}},
                                    headers=acme.headers)
                for i in range(200)
            ]
        )
    finally:
        client.send = send
    assert [r.status for r in responses] == [202] * 200
    assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == 200
    # One send at a time would need 200 produce requests; batched, far fewer.
    assert 1 <= produce_requests <= 50, produce_requests


async def test_with_the_broker_failing_a_submit_is_503_and_names_the_key_to_retry_with(settings):
    async with IngressHarness(settings, options=IngressOptions(publish_timeout=2.0)) as harness:
        acme = await harness.add_tenant(unique_id("acme"), "sales")
        # The real broker refuses every send: the topic is gone (and never auto-created).
        admin = make_admin(settings)
        await start_client(admin, what="test admin")
        try:
            await admin.delete_topics([settings.topics.commands])
        finally:
            await admin.close()
        response = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
        assert response.status == 503 and response.headers["Retry-After"] == "2"
        error = (await response.json())["error"]
        assert error["code"] == "unavailable" and "same idempotency key" in error["message"]
        # No key was given: the one generated for this request is named, with its command id.
        assert error["idempotency_key"].startswith("auto-")
        assert error["command_id"] == command_id_for(acme.tenant_id, acme.space_id, error["idempotency_key"])
        await assert_documented(harness, "/v1/commands", 503, await response.json(), response.headers)

        items = [{"action": "echo", "idempotency_key": f"k-{i}"} for i in range(2)]
        batch = await harness.client.post("/v1/commands:batch", json={"items": items}, headers=acme.headers)
        assert batch.status == 503 and batch.headers["Retry-After"] == "2"
        body = await batch.json()
        assert body["accepted"] == 0
        assert [item["error"]["idempotency_key"] for item in body["items"]] == ["k-0", "k-1"]
        await assert_documented(harness, "/v1/commands:batch", 503, body, batch.headers)


@asynccontextmanager
async def stalled_produce(harness: IngressHarness) -> AsyncIterator[None]:
    """The ingress's produce requests hang (a stalled broker) inside the block, and go
    through after it."""
    client = harness.client.app[STATE].pipeline.producer.client
    send = client.send
    held = asyncio.Event()

    async def stalled_send(node_id, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        if type(request).__name__.startswith("ProduceRequest"):
            await held.wait()
        return await send(node_id, request, *args, **kwargs)

    client.send = stalled_send
    try:
        yield
    finally:
        client.send = send
        held.set()


@pytest.mark.parametrize(("publish", "cut"), [(1.0, 2.5), (30.0, 3.0)])
async def test_a_batch_the_broker_never_answers_names_every_key_before_the_edge_cuts_it(
    settings, publish: float, cut: float
):
    # Produce requests hang (a stalled broker): the whole batch shares one deadline, within
    # both the publish timeout and what is left of the request, so the answer comes before
    # the edge's request timeout and still names each item's key to retry with
    # (sequential timeouts took N x 1 s > 2.5 s; a 30 s publish timeout outlasted 3 s:
    # a bare 503).
    options = IngressOptions(publish_timeout=publish, request_timeout=cut)
    async with IngressHarness(settings, options=options) as harness:
        acme = await harness.add_tenant(unique_id("acme"), "sales")
        async with stalled_produce(harness):
            items = [{"action": "echo", "idempotency_key": f"stall-{i}"} for i in range(4)]
            batch = await harness.client.post("/v1/commands:batch", json={"items": items}, headers=acme.headers)
            body = await batch.json()
            # Cut by the request's own time, not the publish timeout: that says nothing of
            # the broker, and the next submits keep the full publish wait.
            failing = harness.client.app[STATE].pipeline.broker_failing
        assert batch.status == 503, body
        assert [item["error"]["idempotency_key"] for item in body["items"]] == [f"stall-{i}" for i in range(4)]
        assert failing is (publish < cut)


async def test_while_the_broker_is_away_submits_fail_fast_until_one_is_acknowledged(settings):
    # The first submit waits the whole publish timeout; while nothing has been
    # acknowledged since, the next ones wait the short one, so clients hear 503 in seconds
    # and the edge does not fill up with waiting requests. A late acknowledgement (the
    # broker back) restores the full wait.
    options = IngressOptions(publish_timeout=3.0, failing_publish_timeout=0.2, request_timeout=10.0)
    async with IngressHarness(settings, options=options) as harness:
        acme = await harness.add_tenant(unique_id("acme"), "sales")
        loop = asyncio.get_running_loop()

        async def timed_submit(key: str) -> tuple[int, float]:
            started = loop.time()
            response = await harness.client.post(
                "/v1/commands", json={"action": "echo", "idempotency_key": key}, headers=acme.headers
            )
            return response.status, loop.time() - started

        async with stalled_produce(harness):  # then the held requests go through, acked late
            first, first_took = await timed_submit("away-0")
            second, second_took = await timed_submit("away-1")
        assert (first, second) == (503, 503)
        assert first_took >= 3.0 > 2 * second_took  # the full wait, then the short one
        async with asyncio.timeout(20):
            while harness.client.app[STATE].pipeline.broker_failing:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert (await timed_submit("back"))[0] == 202


async def test_a_batch_with_no_valid_item_fails_as_a_whole_and_publishes_nothing(harness, acme):
    items = [{"action": "bad action name!"}, {"action": "echo", "arguments": "not an object"}]
    response = await harness.client.post("/v1/commands:batch", json={"items": items}, headers=acme.headers)
    assert response.status == 400
    body = await response.json()
    assert body["accepted"] == 0 and [item["status_code"] for item in body["items"]] == [400, 400]
    assert body["items"][1]["error"]["message"].startswith("items.1.arguments: ")
    await assert_documented(harness, "/v1/commands:batch", 400, body)
    not_objects = await harness.client.post("/v1/commands:batch", json={"items": [7]}, headers=acme.headers)
    message = (await not_objects.json())["items"][0]["error"]["message"]
    assert message == "items.0: a command must be a JSON object"
    assert await read_topic(harness.settings, harness.settings.topics.commands) == []


async def test_a_retried_batch_is_charged_for_its_new_items_only(settings):
    # An integrator's review: a batch sent again (after a timeout, say) got 429 because
    # its replays, which publish nothing, took tokens like new commands.
    async with IngressHarness(settings, options=IngressOptions(rate_per_second=0.001, burst=4)) as harness:
        acme = await harness.add_tenant(unique_id("acme"), "sales")
        batch = {"items": [{"action": "echo", "idempotency_key": f"k{i}"} for i in range(3)]}
        first = await harness.client.post("/v1/commands:batch", json=batch, headers=acme.headers)
        assert first.status == 200 and (await first.json())["accepted"] == 3
        again = await harness.client.post("/v1/commands:batch", json=batch, headers=acme.headers)
        assert again.status == 200  # one token for the request, none per replay
        assert [item["replayed"] for item in (await again.json())["items"]] == [True, True, True]
        # The bucket still holds for new commands: the 4 tokens are used.
        new = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
        assert new.status == 429
        assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == 3


async def test_a_batch_keys_its_items_by_the_header_and_refuses_more_than_a_burst(settings):
    async with IngressHarness(settings, options=IngressOptions(rate_per_second=10.0, burst=3)) as harness:
        acme = await harness.add_tenant(unique_id("acme"), "sales")
        items = [{"action": "echo"}]
        # Items without a key of their own take "<header>:<index>": a retried batch
        # runs none of them twice; an item's own key wins.
        keyed = {"items": [{"action": "echo"}, {"action": "echo", "idempotency_key": "mine"}]}
        headers = {**acme.headers, "Idempotency-Key": "hk"}
        first = await (await harness.client.post("/v1/commands:batch", json=keyed, headers=headers)).json()
        await asyncio.sleep(0.3)  # the edge's burst of 3 refills
        again = await (await harness.client.post("/v1/commands:batch", json=keyed, headers=headers)).json()
        assert [i["command_id"] for i in first["items"]] == [
            command_id_for(acme.tenant_id, acme.space_id, "hk:0"), command_id_for(acme.tenant_id, acme.space_id, "mine")
        ]  # fmt: skip
        assert [i["command_id"] for i in again["items"]] == [i["command_id"] for i in first["items"]]
        assert [i["replayed"] for i in again["items"]] == [True, True]
        assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == 2
        await asyncio.sleep(0.3)  # the burst of 3 refills
        too_many = await harness.client.post("/v1/commands:batch", json={"items": items * 4}, headers=acme.headers)
        assert too_many.status == 400 and "smaller batches" in (await too_many.json())["error"]["message"]
        # The key's own tenant named in the envelope is ignored, as on a single submit.
        own = await harness.client.post(
            "/v1/commands:batch", json={"tenant_id": acme.tenant_id, "items": items * 3}, headers=acme.headers
        )
        assert own.status == 200 and (await own.json())["accepted"] == 3
        assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == 5


async def test_a_body_not_declared_as_json_is_415_and_a_loose_deadline_is_400(harness, acme):
    body = b'{"action": "echo"}'
    for media in ("text/plain", "application/x-www-form-urlencoded"):
        response = await harness.client.post(
            "/v1/commands", data=body, headers={**acme.headers, "Content-Type": media}
        )
        assert response.status == 415
        assert (await response.json())["error"]["code"] == "unsupported_media_type"
    for deadline in (True, "5", 0):
        response = await harness.client.post(
            "/v1/commands", json={"action": "echo", "deadline_seconds": deadline}, headers=acme.headers
        )
        assert response.status == 400, deadline
        assert "deadline_seconds" in (await response.json())["error"]["message"]
    assert await read_topic(harness.settings, harness.settings.topics.commands) == []


async def test_a_finished_command_whose_result_was_forgotten_never_reads_as_pending(settings):
    # Two Results kept: the third forgets the first, which still reads as finished; two
    # more and its id is let go of too, with the command this replica remembered.
    async with IngressHarness(settings, options=IngressOptions(results_capacity=2)) as replica:
        tenant = await replica.add_tenant(unique_id("acme"), "sales")
        async with replica.responder():
            urls = []
            for n in range(5):
                body = {"action": "echo", "idempotency_key": f"k{n}"}
                accepted = await (await replica.client.post("/v1/commands", json=body, headers=tenant.headers)).json()
                done = await replica.client.get(accepted["status_url"] + "?wait=20", headers=tenant.headers)
                assert (await done.json())["status"] == "succeeded"
                urls.append(accepted["status_url"])
                if n == 2:
                    forgotten = await replica.client.get(urls[0], headers=tenant.headers)
                    assert forgotten.status == 404
                    assert "has finished" in (await forgotten.json())["error"]["message"]
        gone = await replica.client.get(urls[0], headers=tenant.headers)
        assert gone.status == 404 and (await gone.json())["error"]["message"] == "no such command"


async def test_the_commands_a_replica_remembers_are_bounded_in_bytes(settings):
    budget = 1024 * 1024
    async with IngressHarness(settings, options=IngressOptions(submitted_max_bytes=budget)) as replica:
        tenant = await replica.add_tenant(unique_id("acme"), "sales")
        items = [{"action": "echo", "arguments": {"text": "x" * 200_000}, "idempotency_key": f"k{n}"} for n in range(8)]
        for item in items:
            assert (await replica.client.post("/v1/commands", json=item, headers=tenant.headers)).status == 202
        remembered = replica.client.app[STATE].pipeline._submitted
        assert 0 < remembered.bytes <= budget and len(remembered) < len(items)
        # The newest is still answered as a replay from memory.
        replay = await replica.client.post("/v1/commands", json=items[-1], headers=tenant.headers)
        assert replay.status == 200 and (await replay.json())["replayed"] is True


async def test_api_answers_are_never_cached(harness, acme: TenantHandle):
    submitted = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
    read = await harness.client.get(f"/v1/commands/{(await submitted.json())['command_id']}", headers=acme.headers)
    refused = await harness.client.get("/v1/commands/cnope", headers={"Authorization": "Bearer sy_nope_nope"})
    # MCP too, answered as JSON or as an event stream.
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}
    mcp = [
        await harness.client.post(
            f"/mcp/{acme.space_id}", json=listing,
            headers={**acme.headers, "Accept": accept, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"},
        )
        for accept in ("application/json, text/event-stream", "text/event-stream")
    ]  # fmt: skip
    assert [r.content_type for r in mcp] == ["application/json", "text/event-stream"]
    for response in (submitted, read, refused, *mcp):
        assert response.headers["Cache-Control"] == "no-store", response.status
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def _site_action() -> ActionConfig:
    # A target app whose own data is called "tenant" (an Atlassian site), declared by the action.
    return ActionConfig(
        name="file_issue", description="file an issue", connector="http", operation="echo",
        input_schema={"type": "object", "properties": {"tenant": {"type": "string"}, "n": {}}},
        arguments={"text": "x"},
    )  # fmt: skip


async def test_an_argument_the_action_declares_is_data_on_rest_as_on_mcp(harness):
    acme = await harness.add_tenant(unique_id("acme"), "sales", actions=[echo_action(), _site_action()])
    site = {"action": "file_issue", "arguments": {"tenant": "acme-eu.atlassian.net"}}
    assert (await harness.client.post("/v1/commands", json=site, headers=acme.headers)).status == 202
    batch = await harness.client.post("/v1/commands:batch", json={"items": [site]}, headers=acme.headers)
    assert batch.status == 200 and (await batch.json())["accepted"] == 1
    # The caller's own workspace named in the body is allowed and ignored, as its tenant is.
    own = {"action": "echo", "space_id": "sales", "tenant_id": acme.tenant_id}
    assert (await harness.client.post("/v1/commands", json=own, headers=acme.headers)).status == 202
    other_space = {"action": "echo", "space_id": "ops"}
    assert (await harness.client.post("/v1/commands", json=other_space, headers=acme.headers)).status == 403
    # In the arguments a "space_id" is the app's (a Confluence space), declared or not.
    app_space = {"action": "echo", "arguments": {"space_id": "ENG"}}
    assert (await harness.client.post("/v1/commands", json=app_space, headers=acme.headers)).status == 202
    # Undeclared, it is still a claim of another tenant: refused, nothing published.
    for claim in (
        {"action": "echo", "arguments": {"tenant": "someone_else"}},
        {"action": "file_issue", "arguments": {"tenant_id": "someone_else"}},
        {"action": "file_issue", "arguments": {"n": {"tenant": "someone_else"}}, "tenant": "someone_else"},
    ):
        refused = await harness.client.post("/v1/commands", json=claim, headers=acme.headers)
        assert refused.status == 403, claim
    batch = await harness.client.post(
        "/v1/commands:batch", json={"items": [{"action": "echo", "tenant_id": "someone_else"}]}, headers=acme.headers
    )
    assert batch.status == 403
    await assert_documented(harness, "/v1/commands:batch", 403, await batch.json())
    assert len(await read_topic(harness.settings, harness.settings.topics.commands)) == 4


async def test_an_empty_idempotency_key_header_is_refused_on_a_batch_as_on_a_submit(harness, acme):
    headers = {**acme.headers, "Idempotency-Key": ""}
    single = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=headers)
    # Taken as a key, it made every later batch sent without one a replay of this one.
    batch = await harness.client.post("/v1/commands:batch", json={"items": [{"action": "echo"}]}, headers=headers)
    assert (single.status, batch.status) == (400, 400)
    assert await read_topic(harness.settings, harness.settings.topics.commands) == []


async def test_a_key_reused_with_true_where_it_had_1_is_another_command(harness):
    acme = await harness.add_tenant(unique_id("acme"), "sales", actions=[_site_action()])
    first = {"action": "file_issue", "arguments": {"n": 1}, "idempotency_key": "k-1"}
    assert (await harness.client.post("/v1/commands", json=first, headers=acme.headers)).status == 202
    same = await harness.client.post(
        "/v1/commands", json={**first, "arguments": {"n": 1.0}}, headers=acme.headers
    )
    assert same.status == 200  # the same JSON number
    other = await harness.client.post(
        "/v1/commands", json={**first, "arguments": {"n": True}}, headers=acme.headers
    )
    assert other.status == 409


async def test_an_integer_past_64_bits_is_refused_not_rounded(harness):
    acme = await harness.add_tenant(unique_id("acme"), "sales", actions=[_site_action()])
    raw = b'{"action": "file_issue", "arguments": {"n": 18446744073709551617}}'
    refused = await harness.client.post(
        "/v1/commands", data=raw, headers={**acme.headers, "Content-Type": "application/json"}
    )
    # It was published as 1.8446744073709552e+19 and answered 202.
    assert refused.status == 400 and "64 bits" in (await refused.json())["error"]["message"]
    exact = b'{"action": "file_issue", "arguments": {"n": 18446744073709551615}}'
    kept = await harness.client.post("/v1/commands", data=exact, headers={**acme.headers, "Content-Type": "application/json"})
    assert kept.status == 202
    (record,) = await read_topic(harness.settings, harness.settings.topics.commands)
    assert Command.from_bytes(record.value).arguments["n"] == 18446744073709551615


async def test_the_openapi_document_declares_the_response_headers_clients_rely_on(harness):
    document = await (await harness.client.get("/openapi.json")).json()
    for path in ("/v1/commands", "/v1/spaces/{space_id}/commands"):
        responses = document["paths"][path]["post"]["responses"]
        assert "Location" in responses["202"]["headers"] and "Location" in responses["200"]["headers"]
        assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
    batch = document["paths"]["/v1/commands:batch"]["post"]["responses"]
    assert "Retry-After" in batch["429"]["headers"] and "Retry-After" in batch["503"]["headers"]


async def test_the_openapi_document_keeps_answers_open_like_the_exported_result_schema(harness, acme, responder):
    # A client generated from the document must not break on a field a later release
    # adds (schema_version stays 1 while changes are additive), as the exported
    # result.schema.json promises; and the status is one flat enum, which generators take.
    document = await (await harness.client.get("/openapi.json")).json()
    response = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
    command_id = (await response.json())["command_id"]
    got = await (await harness.client.get(f"/v1/commands/{command_id}?wait=10", headers=acme.headers)).json()
    assert got["status"] == "succeeded", got
    later = {**got, "added_later": 1, "result": {**got["result"], "added_later": {"x": 1},
                                                  "times": {**got["result"]["times"], "added_later": 2}}}
    schema = {"$ref": "#/components/schemas/CommandStatus", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(later)
    status = document["components"]["schemas"]["CommandStatus"]["properties"]["status"]
    assert status["enum"] == ["pending", "succeeded", "failed", "rejected", "expired", "dead_lettered"]
    # What clients send stays closed: the server refuses what it does not know.
    assert document["components"]["schemas"]["SubmitRequest"]["additionalProperties"] is False


async def test_the_openapi_document_accepts_what_the_server_accepts(harness, acme):
    # Claims of the caller's own tenant and workspace, and _meta, are taken (and checked).
    document = await (await harness.client.get("/openapi.json")).json()
    body = {"action": "echo", "tenant_id": acme.tenant_id, "space_id": acme.space_id, "_meta": {"trace": "x"}}
    schema = {"$ref": "#/components/schemas/SubmitRequest", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)
    response = await harness.client.post("/v1/commands", json=body, headers=acme.headers)
    assert response.status == 202
    batch = {"items": [{"action": "echo"}], "tenant_id": acme.tenant_id}
    schema = {"$ref": "#/components/schemas/BatchRequest", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(batch)
    # Admin writes refuse a body that is not JSON (415) or too large (413): both declared.
    for path, method in (("/v1/admin/workspaces/{tenant_id}/{space_id}", "put"), ("/v1/admin/api-keys", "post"),
                         ("/v1/admin/credentials/{tenant_id}/{connector}", "put")):
        assert {"413", "415"} <= set(document["paths"][path][method]["responses"]), path


async def test_a_400_names_a_long_argument_key_cut_short(harness, acme):
    key = "k" * 70_000
    response = await harness.client.post(
        "/v1/commands", json={"action": "echo", "idempotency_key": "long-key-1", key: 1}, headers=acme.headers
    )
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert message.startswith("k" * 64 + "...:") and len(message) < 200
    await assert_documented(harness, "/v1/commands", 400, await response.json())
