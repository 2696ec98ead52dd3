"""A key of one workspace cannot act in, or read from, another workspace of its own
tenant: by the URL path, the ``X-Switchyard-Space`` header or the MCP path, the other
workspace refuses it (403), publishes nothing, and its commands read as unknown."""

from __future__ import annotations

from typing import Any

from .conftest import Abuse, modern_headers, modern_meta

SUMMARY = {"summary": "workspace attempt"}


async def _other_workspace_key(abuse: Abuse) -> str:
    """acme's second workspace, ``other``, and a key that owns only it."""
    admin = {"Authorization": f"Bearer {abuse.system.env['SWITCHYARD_ADMIN_TOKEN']}"}
    slack = abuse.tenants["acme"]
    workspace = slack.workspace().model_dump(mode="json") | {"space_id": "other"}
    status, reply, _ = await abuse.request("PUT", "/v1/admin/workspaces/acme/other", body=workspace, headers=admin)
    assert status in (200, 201), reply
    status, reply, _ = await abuse.request(
        "POST", "/v1/admin/api-keys", headers=admin,
        body={"tenant_id": "acme", "spaces": ["other"], "user_id": "other-user", "role": "member"},
    )
    assert status == 201, reply
    return str(reply["api_key"])


def _mcp_call() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "daily_summary", "arguments": SUMMARY, "_meta": modern_meta()}}


async def test_a_key_of_one_workspace_cannot_use_or_read_another(abuse: Abuse) -> None:
    other_key = await _other_workspace_key(abuse)
    other = {"Authorization": f"Bearer {other_key}"}
    main = abuse.auth("acme")  # owns only acme/main
    body = {"action": "daily_summary", "arguments": SUMMARY}
    before = await abuse.published()

    attempts = [
        await abuse.request("POST", "/v1/spaces/other/commands", body=body, headers=main),
        await abuse.request("POST", "/v1/commands", body=body, headers={**main, "X-Switchyard-Space": "other"}),
        await abuse.request("POST", "/v1/spaces/other/commands:batch", body={"items": [body]}, headers=main),
    ]
    for status, reply, _ in attempts:
        assert status == 403, (status, reply)
    # On MCP, a JSON-RPC error (with 200, as every refusal of a call).
    status, reply, _ = await abuse.request("POST", "/mcp/other", body=_mcp_call(),
                                           headers={**main, **modern_headers("tools/call", "daily_summary")})
    assert status == 200 and reply["error"]["code"] == -32011, (status, reply)
    assert await abuse.published() == before

    # The controls: the other workspace's own key is let in there, and not into main.
    status, reply, _ = await abuse.request("POST", "/v1/spaces/other/commands", body=body, headers=other)
    assert status == 202, reply
    command_id = reply["command_id"]
    assert await abuse.published() == before + 1
    status, _, _ = await abuse.request("POST", "/v1/spaces/main/commands", body=body, headers=other)
    assert status == 403

    # Its command reads as unknown to the main workspace's key, by any path.
    for path in (f"/v1/commands/{command_id}", f"/v1/spaces/other/commands/{command_id}",
                 f"/v1/spaces/main/commands/{command_id}"):
        status, reply, _ = await abuse.request("GET", path, headers=main)
        assert status in (403, 404), (path, status, reply)
        assert command_id not in str(reply) and "workspace attempt" not in str(reply)
    status, reply, _ = await abuse.request("GET", f"/v1/spaces/other/commands/{command_id}?wait=30", headers=other)
    assert status == 200 and reply["command_id"] == command_id
