"""A canary secret stored as a tenant credential appears in no response, no topic of the
deployment's prefix and no process log, after the tenant used it on every path."""

from __future__ import annotations

import aiohttp

from core.kafka import make_admin
from ingress.testing import read_topic
from workers.emulators.testing import emulator_control

from .conftest import CANARY, Abuse, Session, modern_call


async def _use_the_canary_everywhere(abuse: Abuse) -> None:
    system = abuse.system
    admin = {"Authorization": f"Bearer {system.env['SWITCHYARD_ADMIN_TOKEN']}"}
    status, reply, _ = await abuse.request("PUT", "/v1/admin/credentials/canary/slack",
                                           body={"bot_token": CANARY}, headers=admin)
    assert status == 200, reply
    # Success paths: REST, stateless MCP, a handshake session.
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands", body={"action": "daily_summary", "arguments": {"summary": "canary"}},
        headers=abuse.auth("canary"),
    )
    assert status == 202, reply
    status, reply, _ = await abuse.request("GET", f"/v1/commands/{reply['command_id']}?wait=20",
                                           headers=abuse.auth("canary"))
    assert reply["status"] == "succeeded", reply  # the worker read the canary and the API took it
    status, reply = await modern_call(abuse, "canary", "tools/call",
                                      {"name": "daily_summary", "arguments": {"summary": "canary mcp"}})
    assert status == 200 and reply["result"]["isError"] is False, reply
    session = await Session(abuse, "canary").open()
    status, reply = await session.call("tools/call", {"name": "daily_summary", "arguments": {"summary": "s"}})
    assert status == 200 and reply["result"]["isError"] is False, reply
    # Failure paths: the upstream refuses the token, then errors out until the command is
    # dead-lettered; the errors travel back to the caller.
    async with aiohttp.ClientSession() as http:
        for fault in ({"kind": "403", "tenant": "canary", "count": 1},
                      {"kind": "500", "tenant": "canary", "count": 50}):
            await emulator_control(http, system.emulator_url, "faults", fault)
            status, reply = await modern_call(abuse, "canary", "tools/call",
                                              {"name": "daily_summary", "arguments": {"summary": "fail"}})
            assert status == 200 and reply["result"]["isError"] is True, reply
        await emulator_control(http, system.emulator_url, "reset", {})
    # Where failures, traces and counts come back out: the tenant's views and live stream,
    # the operator's overview and the metrics (each read lands in abuse.seen).
    canary = abuse.auth("canary")
    status, commands, _ = await abuse.request("GET", "/v1/tenants/canary/commands", headers=canary)
    assert status == 200 and commands["commands"], commands
    for path in ("/v1/tenants/canary/errors", "/v1/tenants/canary/metrics",
                 f"/v1/tenants/canary/commands/{commands['commands'][0]['command_id']}/trace"):
        status, reply, _ = await abuse.request("GET", path, headers=canary)
        assert status == 200, (path, reply)
    for path, headers in (("/v1/admin/overview", admin), ("/v1/tenants/canary/errors", admin)):
        status, reply, _ = await abuse.request("GET", path, headers=headers)
        assert status == 200, (path, reply)
    metrics_url = system.metrics_urls["ingress"]
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as scraped:
        abuse.seen.append(await scraped.read())
    async with aiohttp.ClientSession() as http, http.get(
        f"{abuse.url}/v1/stream?view=tenant", headers=canary, timeout=aiohttp.ClientTimeout(total=30)
    ) as streamed:
        abuse.seen.append(await streamed.content.readuntil(b"\n\n"))  # the first snapshot


async def test_a_canary_credential_appears_in_no_response_topic_or_log(abuse: Abuse) -> None:
    await _use_the_canary_everywhere(abuse)
    needle = CANARY.encode()
    leaked = any(needle in blob for blob in abuse.seen)
    assert not leaked, "the canary leaked into a response"
    settings = abuse.system.settings
    admin = make_admin(settings)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(settings.topic_prefix))
    finally:
        await admin.close()
    assert settings.topics.results in topics and settings.topics.connector("slack") in topics
    scanned = 0
    for topic in topics:
        for record in await read_topic(settings, topic):
            blob = (record.key or b"") + (record.value or b"") + b"".join(v or b"" for _, v in record.headers or ())
            leaked = needle in blob
            assert not leaked, f"the canary leaked into topic {topic}"
            scanned += 1
    assert scanned > 0
    logs = sorted(abuse.system.log_dir.glob("*.log"))
    assert {"ingress.log", "router.log", "worker-slack-1.log", "emulators.log"} <= {p.name for p in logs}
    for log in logs:
        leaked = needle in log.read_bytes()
        assert not leaked, f"the canary leaked into {log.name}"
    print(f"canary scan: {len(abuse.seen)} responses, {len(topics)} topics ({scanned} records), {len(logs)} logs")
