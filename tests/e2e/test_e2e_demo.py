"""The product's promise end to end, on real processes: the same action goes to each
tenant's own app with that tenant's own credentials, through the official MCP client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from ingress.app import STATE, IngressOptions
from ingress.testing import IngressHarness, read_topic
from switchyard._demo_client import call_daily_summary

from .conftest import RunningSystem

EXPECTED = {"acme": "slack", "beta": "gmail", "gamma": "notion", "delta": "jira"}


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_daily_summary_runs_on_each_tenants_own_app_through_mcp(running: RunningSystem, mode: str) -> None:
    url = running.system.ingress_url
    for tenant, connector in EXPECTED.items():
        outcome = await call_daily_summary(
            f"{url}/mcp/main", running.keys[tenant], summary=f"{tenant} {mode} summary", mode=mode
        )
        assert outcome.ok, outcome.summary
        assert outcome.connector == connector
        assert outcome.tools == ["daily_summary"]
        names = {span["name"] for span in outcome.spans}
        assert {"router.route", "worker.execute"} <= names, names
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{running.system.emulator_url}/_emulator/calls") as response:
            calls = (await response.json())["calls"]
    seen = {(c["connector"], c["tenant"]) for c in calls}
    for tenant, connector in EXPECTED.items():
        assert (connector, tenant) in seen
    # Each app was called only for its own tenant: no tenant's command reached another's app.
    assert all(EXPECTED.get(c["tenant"]) == c["connector"] for c in calls)


async def test_async_rest_batch_ends_each_accepted_command_with_exactly_one_result(running: RunningSystem) -> None:
    url = running.system.ingress_url
    ids: list[str] = []
    async with aiohttp.ClientSession() as session:
        for tenant in EXPECTED:
            body = {"items": [{"action": "daily_summary", "arguments": {"summary": f"s{i}"}} for i in range(25)]}
            async with session.post(
                f"{url}/v1/commands:batch", json=body, headers={"Authorization": f"Bearer {running.keys[tenant]}"}
            ) as response:
                assert response.status in (200, 202), await response.text()
                ids += [item["command_id"] for item in (await response.json())["items"]]
        statuses = {}
        for index, command_id in enumerate(ids):
            owner = list(EXPECTED)[index // 25]
            async with session.get(
                f"{url}/v1/commands/{command_id}?wait=30", headers={"Authorization": f"Bearer {running.keys[owner]}"}
            ) as response:
                assert response.status == 200
                statuses[command_id] = (await response.json())["status"]
    assert set(statuses.values()) == {"succeeded"}, statuses
    results = await read_topic(running.system.settings, running.system.settings.topics.results)
    per_command: dict[str, int] = {}
    for record in results:
        command_id = orjson.loads(record.value)["command_id"]
        per_command[command_id] = per_command.get(command_id, 0) + 1
    assert all(per_command.get(command_id) == 1 for command_id in ids), "a command has 0 or 2+ results"


async def test_a_tenant_cannot_read_another_tenants_command(running: RunningSystem) -> None:
    url = running.system.ingress_url
    acme = {"Authorization": f"Bearer {running.keys['acme']}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/v1/commands", json={"action": "daily_summary", "arguments": {"summary": "private"}}, headers=acme,
        ) as response:
            assert response.status == 202, await response.text()
            command_id = (await response.json())["command_id"]
        async with session.get(f"{url}/v1/commands/{command_id}?wait=30", headers=acme) as response:
            assert response.status == 200 and (await response.json())["status"] == "succeeded"
        async with session.get(
            f"{url}/v1/commands/{command_id}?wait=5", headers={"Authorization": f"Bearer {running.keys['beta']}"}
        ) as response:
            assert response.status == 404
            body = await response.text()
    assert command_id not in body and "private" not in body


async def test_no_credential_appears_in_any_topic_or_process_log(running: RunningSystem) -> None:
    # Each tenant's credentials in use here, whatever ran before: one command each, through
    # its own app, so every process has handled them when the scan below runs.
    url = running.system.ingress_url
    async with aiohttp.ClientSession() as session:
        for tenant in EXPECTED:
            headers = {"Authorization": f"Bearer {running.keys[tenant]}"}
            async with session.post(
                f"{url}/v1/commands", json={"action": "daily_summary", "arguments": {"summary": "scan"}},
                headers=headers,
            ) as response:
                assert response.status == 202, await response.text()
                command_id = (await response.json())["command_id"]
            async with session.get(f"{url}/v1/commands/{command_id}?wait=30", headers=headers) as response:
                assert (await response.json())["status"] == "succeeded"
    secrets = [value for t in running.tenants.values() for value in t.credentials.values() if isinstance(value, str)
               and len(value) > 12]
    secrets += list(running.keys.values())
    assert len(secrets) >= 2 * len(EXPECTED)
    settings = running.system.settings
    topics = settings.topics
    scanned: dict[str, int] = {}
    for topic in (
        topics.commands, topics.results, topics.config, topics.logs, topics.dead_letters,
        *(topics.connector(c) for c in EXPECTED.values()),
    ):
        for record in await read_topic(settings, topic):
            blob = (record.key or b"") + (record.value or b"") + b"".join(v or b"" for _, v in (record.headers or ()))
            leaked = any(secret.encode() in blob for secret in secrets)
            assert not leaked, f"a credential leaked into {topic}"
            scanned[topic] = scanned.get(topic, 0) + 1
    for topic in (topics.commands, topics.results, topics.config, *(topics.connector(c) for c in EXPECTED.values())):
        assert scanned.get(topic, 0) > 0, f"nothing on {topic} to scan"
    logs = {log.name: log for log in Path(running.system.log_dir).glob("*.log")}
    assert {"ingress.log", "router.log", *(f"worker-{c}-1.log" for c in EXPECTED.values())} <= set(logs), sorted(logs)
    for name, log in logs.items():
        text = log.read_text(errors="replace")
        leaked = any(secret in text for secret in secrets)
        assert not leaked, f"a credential leaked into {name}"


async def test_every_line_every_process_logs_is_json(running: RunningSystem) -> None:
    # The emulators stand in for the vendors' APIs; they are not Switchyard's processes.
    logs = sorted(log for log in Path(running.system.log_dir).glob("*.log") if log.name != "emulators.log")
    assert any(log.name == "router.log" for log in logs)
    for log in logs:
        for number, line in enumerate(log.read_bytes().splitlines(), 1):
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                pytest.fail(f"{log.name}:{number} is not JSON: {line[:120]!r}")


async def test_each_tenants_execution_log_stream_is_keyed_by_that_tenant(running: RunningSystem) -> None:
    settings = running.system.settings
    lines = [(record.key.decode(), orjson.loads(record.value)) for record in await read_topic(settings, settings.topics.logs)]
    assert {key for key, _ in lines} >= set(EXPECTED)
    assert all(line["tenant_id"] == key for key, line in lines)
    assert all(line.get("connector") == EXPECTED[key] for key, line in lines)


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)


async def test_each_process_holds_the_secrets_of_its_own_role_only(running: RunningSystem) -> None:
    system = running.system
    assert system.supervisor is not None
    env = {child.name: _environment(child.record.pid) for child in system.supervisor.children}
    root = system.env["VAULT_TOKEN"]

    def secrets(name: str) -> set[str]:
        return {k for k in env[name] if k.startswith(("VAULT_TOKEN", "SWITCHYARD_ADMIN", "SWITCHYARD_VAULT_"))}

    # The ingress: a token of the switchyard-ingress policy (never the root token) and the admin token.
    assert secrets("ingress") == {"VAULT_TOKEN", "SWITCHYARD_ADMIN_TOKEN"}
    not_root = env["ingress"]["VAULT_TOKEN"] != root
    assert not_root, "the ingress holds the root token"
    # Each worker: its own pool's AppRole only.
    for connector in EXPECTED.values():
        pool = connector.upper()
        assert secrets(f"worker-{connector}-1") == {f"SWITCHYARD_VAULT_ROLE_ID_{pool}", f"SWITCHYARD_VAULT_SECRET_ID_{pool}"}
    assert secrets("router") == set() and secrets("emulators") == set()


async def test_a_replay_on_a_replica_started_after_its_result_reads_that_result(running: RunningSystem) -> None:
    """A key resubmitted on a replica whose lookback does not reach its first use (one a
    deploy started since): the router drops the replay and says so, and that replica
    finds the Result on the results topic instead of answering pending for ever."""
    system = running.system
    headers = {"Authorization": f"Bearer {running.keys['acme']}"}
    body = {"action": "daily_summary", "arguments": {"summary": "replayed later"}, "idempotency_key": "replay-1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{system.ingress_url}/v1/commands", json=body, headers=headers) as response:
            first = await response.json()
        async with session.get(f"{system.ingress_url}{first['status_url']}?wait=30", headers=headers) as response:
            assert (await response.json())["status"] == "succeeded"
    await asyncio.sleep(2.5)
    late = IngressOptions(results_lookback=1.0)
    async with IngressHarness(system.settings, options=late) as replica:
        # (It starts once its directory has read the keys from the config topic.)
        again = await replica.client.post("/v1/commands", json=body, headers=headers)
        replay = await again.json()
        assert again.status == 202 and replay["command_id"] == first["command_id"]  # not known here
        polled = await replica.client.get(f"{replay['status_url']}?wait=30", headers=headers)
        status = await polled.json()
        assert status["status"] == "succeeded", status
        assert replica.client.app[STATE].results.earlier.found == 1
    results = await read_topic(system.settings, system.settings.topics.results)
    assert [orjson.loads(r.value)["command_id"] for r in results].count(first["command_id"]) == 1
