"""A planted canary secret never reaches any topic or log line."""

from __future__ import annotations

import io
import logging
import uuid

import pytest
from _runtime_support import (
    Upstream,
    all_results,
    command,
    pool_running,
    produce,
    put_tenant,
    read_topic,
    wait_results,
)

from core.kafka import make_admin, start_client
from core.logs import JsonFormatter
from schemas import ErrorCode, ResultStatus

pytestmark = pytest.mark.integration


async def test_canary_secret_never_appears_in_any_topic_or_log(settings, vault_admin):
    canary = f"CANARY{uuid.uuid4().hex}"
    upstream = Upstream()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("worker-test"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        async with upstream.running():
            tenant, rotating = f"cn{settings.topic_prefix[1:9]}", f"cr{settings.topic_prefix[1:9]}"
            token = await put_tenant(vault_admin, upstream, tenant, client_secret=canary)
            stale = await put_tenant(vault_admin, upstream, rotating, valid=False, client_secret=canary)
            commands = [
                command(tenant),  # succeeds
                command(tenant, leak=True),  # a connector that puts credentials in its error
                command(tenant, faults=[500] * 50),  # dead-lettered with its error history
                command(rotating),  # 401, refresh, retry
            ]
            async with pool_running(settings, vault_admin, upstream):
                await produce(settings, commands)
                await wait_results(settings, {c.command_id for c in commands})
            results = await all_results(settings)
            admin = make_admin(settings)
            await start_client(admin, what="test admin")
            try:
                topics = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
            finally:
                await admin.close()
            payloads = []
            for topic in topics:
                for record in await read_topic(settings, topic):
                    payloads.append(bytes(record.value or b""))
                    payloads.extend(bytes(v or b"") for _, v in record.headers)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)

    leaked = results[commands[1].command_id][0]
    assert leaked.status is ResultStatus.FAILED and leaked.error is not None
    assert leaked.error.code is ErrorCode.UPSTREAM_REJECTED and "***" in leaked.error.message
    assert results[commands[2].command_id][0].status is ResultStatus.DEAD_LETTERED
    assert results[commands[3].command_id][0].status is ResultStatus.SUCCEEDED
    assert len(topics) >= 5 and len(payloads) > 10
    secrets = [canary, token, stale, *upstream.tokens[rotating]]
    logs = stream.getvalue()
    # The worker did log about these commands (with their context), so the check below means something.
    assert '"msg":"command dead_lettered"' in logs and f'"tenant_id":"{tenant}"' in logs
    for secret in secrets:
        assert not any(secret.encode() in payload for payload in payloads), "secret found in Kafka"
        in_logs = secret in logs
        assert not in_logs, "secret found in logs"
