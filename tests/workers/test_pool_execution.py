"""The pool against real Kafka and OpenBao: tokens per tenant, one Result each, traces."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from _runtime_support import (
    CONNECTOR,
    Upstream,
    all_results,
    command,
    ensure_pool_topics,
    pool_running,
    produce,
    put_tenant,
    read_topic,
    wait_results,
)

from core.kafka import make_producer, start_client
from schemas import ErrorCode, ResultStatus, RoutedCommand
from workers._execute import upstream_idempotency_key

pytestmark = pytest.mark.integration


async def test_each_tenant_is_executed_with_its_own_token_and_gets_exactly_one_result(
    settings, vault_admin
):
    upstream = Upstream()
    async with upstream.running():
        tenants = [f"ta{settings.topic_prefix[1:9]}", f"tb{settings.topic_prefix[1:9]}"]
        tokens = {t: await put_tenant(vault_admin, upstream, t) for t in tenants}
        commands = [command(t, text=f"m{i}") for t in tenants for i in range(10)]
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, commands)
            await wait_results(settings, {c.command_id for c in commands})
        results = await all_results(settings)

    assert {cid: len(rs) for cid, rs in results.items()} == {c.command_id: 1 for c in commands}
    assert Counter(r[0].status for r in results.values()) == {ResultStatus.SUCCEEDED: 20}
    for cmd in commands:
        (call,) = upstream.calls_for(cmd.command_id)
        assert call.tenant == cmd.tenant_id
        assert call.token == tokens[cmd.tenant_id]
        assert call.idempotency_key == upstream_idempotency_key(cmd)
        (result,) = results[cmd.command_id]
        assert result.output == {"ok": True, "echo": cmd.arguments["text"], "tenant": cmd.tenant_id}
        assert result.attempts == 1
        assert result.times.started_at is not None and result.times.routed_at is not None
        assert result.times.submitted_at <= result.times.started_at <= result.times.finished_at
        # One trace: router.route -> worker.execute -> upstream.echo.send, linked by W3C context.
        by_id = {s.span_id: s for s in result.spans}
        names = [s.name for s in result.spans]
        assert sorted(names) == sorted(["router.route", "worker.execute", "upstream.echo.send"])
        spans = {s.name: s for s in result.spans}
        assert {s.trace_id for s in result.spans} == {result.trace_id}
        assert spans["worker.execute"].parent_span_id == spans["router.route"].span_id
        assert spans["upstream.echo.send"].parent_span_id == spans["worker.execute"].span_id
        assert spans["upstream.echo.send"].kind == "client"
        assert len(by_id) == 3
        assert (
            call.traceparent is not None and spans["upstream.echo.send"].span_id in call.traceparent
        )


async def test_unparseable_record_is_dead_lettered_raw_and_the_partition_moves_on(
    settings, vault_admin
):
    upstream = Upstream()
    async with upstream.running():
        tenant = f"tp{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        good = command(tenant)
        await ensure_pool_topics(settings)
        producer = make_producer(settings)
        await start_client(producer, what="test")
        try:
            topic = settings.topics.connector(CONNECTOR)
            await producer.send_and_wait(topic, b"{not json", key=tenant.encode(), partition=0)
            await producer.send_and_wait(
                topic, b'{"command_id": "x"}', key=tenant.encode(), partition=0
            )
            # A valid command with a field this worker does not know (a newer router's).
            newer = orjson.loads(command(tenant).to_bytes()) | {"field_of_a_newer_router": 1}
            await producer.send_and_wait(topic, orjson.dumps(newer), key=tenant.encode(), partition=0)
        finally:
            await producer.stop()
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [good], partition=0)
            await wait_results(settings, {good.command_id})
        dead = await read_topic(settings, settings.topics.dead_letters)
        results = await all_results(settings)

    assert sorted(r.value for r in dead) == sorted([b"{not json", b'{"command_id": "x"}', orjson.dumps(newer)])
    assert all(dict(r.headers)["sy-kind"] == b"unparseable" for r in dead)
    assert [r.status for r in results[good.command_id]] == [ResultStatus.SUCCEEDED]
    # The command still readable in it ends with its one final Result; the others hold none.
    [final] = results[newer["command_id"]]
    assert final.status is ResultStatus.FAILED and final.error is not None
    assert final.error.code is ErrorCode.INTERNAL and "dead-lettered" in final.error.message
    assert set(results) == {good.command_id, newer["command_id"]}


async def test_command_past_its_deadline_expires_without_calling_upstream(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = f"te{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        late = command(tenant, deadline_in=-1.0)
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [late])
            results = await wait_results(settings, {late.command_id})

    (result,) = results[late.command_id]
    assert result.status is ResultStatus.EXPIRED
    assert result.error is not None and result.error.code is ErrorCode.DEADLINE_EXPIRED
    assert upstream.calls_for(late.command_id) == []


async def test_upstream_rejection_ends_in_one_failed_result_without_retries(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = f"tr{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        bad = command(tenant, reject=True)
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [bad])
            await wait_results(settings, {bad.command_id})
        results = await all_results(settings)

    (result,) = results[bad.command_id]
    assert result.status is ResultStatus.FAILED
    assert result.error is not None and result.error.code is ErrorCode.UPSTREAM_REJECTED
    assert result.error.http_status == 400
    assert len(upstream.calls_for(bad.command_id)) == 1


async def test_command_routed_to_an_unknown_operation_fails_cleanly(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = f"tu{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        odd = RoutedCommand.model_validate({**command(tenant).model_dump(), "operation": "nope"})
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [odd])
            results = await wait_results(settings, {odd.command_id})

    (result,) = results[odd.command_id]
    assert result.status is ResultStatus.FAILED
    assert result.error is not None and result.error.code is ErrorCode.INVALID_ARGUMENTS
