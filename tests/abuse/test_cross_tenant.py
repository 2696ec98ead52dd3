"""No tenant reads another's commands, tasks or credentials, whatever id it presents."""

from __future__ import annotations

import aiohttp
import pytest

from workers.emulators.testing import emulator_control

from .conftest import CANARY, Abuse, Session

SUMMARY = {"summary": "private to acme"}


async def _acme_command(abuse: Abuse) -> str:
    status, reply, _ = await abuse.request(
        "POST", "/v1/commands", body={"action": "daily_summary", "arguments": SUMMARY},
        headers=abuse.auth("acme"),
    )
    assert status == 202, reply
    command_id = reply["command_id"]
    status, reply, _ = await abuse.request("GET", f"/v1/commands/{command_id}?wait=20", headers=abuse.auth("acme"))
    assert status == 200 and reply["status"] == "succeeded", reply
    return command_id


async def test_another_tenants_command_reads_as_unknown_over_rest(abuse: Abuse) -> None:
    command_id = await _acme_command(abuse)
    for path in (f"/v1/commands/{command_id}", f"/v1/commands/{command_id}?wait=1",
                 f"/v1/spaces/main/commands/{command_id}"):
        status, reply, _ = await abuse.request("GET", path, headers=abuse.auth("beta"))
        assert status == 404, (path, reply)
        assert command_id not in str(reply) and "private to acme" not in str(reply)
    # The owner still reads it: the 404 above is about who asks, not a missing command.
    status, reply, _ = await abuse.request("GET", f"/v1/commands/{command_id}", headers=abuse.auth("acme"))
    assert status == 200 and reply["status"] == "succeeded"


async def test_another_tenants_task_reads_as_unknown_over_mcp_tasks(abuse: Abuse) -> None:
    acme = await Session(abuse, "acme").open()
    status, reply = await acme.call(
        "tools/call", {"name": "daily_summary", "arguments": SUMMARY, "task": {"ttl": 60_000}}
    )
    assert status == 200, reply
    task_id = reply["result"]["task"]["taskId"]
    status, reply = await acme.call("tasks/result", {"taskId": task_id})
    assert status == 200 and reply["result"]["isError"] is False, reply

    beta = await Session(abuse, "beta").open()
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        status, reply = await beta.call(method, {"taskId": task_id})
        assert status == 200 and reply["error"]["code"] == -32602, (method, reply)
        assert "private to acme" not in str(reply)
    status, reply = await beta.call("tasks/list", {})
    assert status == 200 and task_id not in str(reply), reply
    # The owner's view is intact (and was not cancelled by beta).
    status, reply = await acme.call("tasks/get", {"taskId": task_id})
    assert status == 200 and reply["result"]["status"] == "completed", reply


async def test_another_tenants_running_task_reads_as_unknown_and_cannot_be_cancelled(abuse: Abuse) -> None:
    # Still running (a slow upstream): the ingress knows it from its own accepted list.
    async with aiohttp.ClientSession() as http:
        await emulator_control(http, abuse.system.emulator_url, "faults",
                               {"kind": "latency", "tenant": "acme", "latency_ms": 3000, "count": 1})
    acme = await Session(abuse, "acme").open()
    status, reply = await acme.call(
        "tools/call", {"name": "daily_summary", "arguments": SUMMARY, "task": {"ttl": 60_000}}
    )
    assert status == 200, reply
    task_id = reply["result"]["task"]["taskId"]
    beta = await Session(abuse, "beta").open()
    for method in ("tasks/get", "tasks/cancel", "tasks/get"):
        status, reply = await beta.call(method, {"taskId": task_id})
        assert status == 200 and reply["error"]["code"] == -32602, (method, reply)
    status, reply = await acme.call("tasks/result", {"taskId": task_id})
    assert status == 200 and reply["result"]["isError"] is False, reply  # not cancelled by beta


async def test_a_session_id_is_bound_to_the_tenant_that_opened_it(abuse: Abuse) -> None:
    acme = await Session(abuse, "acme").open()
    thief = Session(abuse, "beta", session_id=acme.session_id)
    for method, params in (("tools/list", {}), ("tools/call", {"name": "daily_summary", "arguments": SUMMARY}),
                           ("tasks/list", {})):
        status, reply = await thief.call(method, params)
        assert status == 404, (method, reply)
    # Nor can the thief end the owner's session (this server lets no client end one: 405).
    status, _, _ = await abuse.request("DELETE", "/mcp/main", headers=thief.headers())
    assert status in (404, 405)
    status, reply = await acme.call("tools/list", {})
    assert status == 200 and "result" in reply, reply


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET"])
@pytest.mark.parametrize("target", ["acme", "beta"])
async def test_credentials_endpoints_refuse_tenant_keys(abuse: Abuse, method: str, target: str) -> None:
    body = {"bot_token": "xoxb-attacker-chosen-token-123"} if method == "PUT" else None
    status, reply, _ = await abuse.request(
        method, f"/v1/admin/credentials/{target}/slack", body=body, headers=abuse.auth("acme")
    )
    assert status in (401, 403, 405), (status, reply)
    assert CANARY not in str(reply)


async def test_admin_reads_never_return_a_secret(abuse: Abuse) -> None:
    admin = {"Authorization": f"Bearer {abuse.system.env['SWITCHYARD_ADMIN_TOKEN']}"}
    status, reply, _ = await abuse.request(
        "PUT", "/v1/admin/credentials/canary/slack", body={"bot_token": CANARY}, headers=admin
    )
    assert status == 200, reply
    assert set(reply) == {"tenant_id", "connector", "version"}, reply
    status, reply, _ = await abuse.request("GET", "/v1/admin/workspaces/canary/main", headers=admin)
    assert status == 200 and CANARY not in str(reply)
    # Tenant keys do not open the admin API at all.
    status, reply, _ = await abuse.request("GET", "/v1/admin/workspaces/acme/main", headers=abuse.auth("acme"))
    assert status == 401, reply
    status, reply, _ = await abuse.request(
        "POST", "/v1/admin/api-keys", body={"tenant_id": "beta", "spaces": ["main"], "user_id": "mallory"},
        headers=abuse.auth("acme"),
    )
    assert status == 401, reply
