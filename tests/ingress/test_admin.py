"""The admin API: workspaces and keys on the config topic, credentials in OpenBao only."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import hvac
import pytest
from multidict import CIMultiDict

from core.vault_layout import secret_path
from ingress.testing import IngressHarness, echo_action, read_topic, unique_id
from schemas import ApiKeyRecord, WorkspaceConfig, api_key_key

ADMIN_ROUTES = [
    ("PUT", "/v1/admin/workspaces/acme/sales"),
    ("GET", "/v1/admin/workspaces/acme/sales"),
    ("DELETE", "/v1/admin/workspaces/acme/sales"),
    ("POST", "/v1/admin/api-keys"),
    ("GET", "/v1/admin/api-keys/0123456789abcdef"),
    ("DELETE", "/v1/admin/api-keys/0123456789abcdef"),
    ("PUT", "/v1/admin/credentials/acme/slack"),
    ("DELETE", "/v1/admin/credentials/acme/slack"),
]


async def test_admin_endpoints_require_the_admin_token(harness, acme):
    for headers in ({}, acme.headers, {"Authorization": "Bearer wrong-token"}):
        for method, path in ADMIN_ROUTES:
            response = await harness.client.request(method, path, json={"a": 1}, headers=headers)
            assert response.status == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"]
    records = await read_topic(harness.settings, harness.settings.topics.config)
    assert len(records) == 2  # acme's workspace and key: the refused calls wrote nothing


async def test_a_repeated_authorization_header_is_400_on_the_admin_and_operator_routes(harness, acme):
    # As on REST and MCP: with two, which one counts is a guess (a proxy may add one).
    admin = harness.admin_headers["Authorization"]
    for first, second in ((admin, "Bearer x"), ("Bearer x", admin)):
        headers = CIMultiDict([("Authorization", first), ("Authorization", second)])
        for method, path in [*ADMIN_ROUTES, ("GET", "/v1/admin/overview"), ("GET", "/metrics")]:
            response = await harness.client.request(method, path, json={"a": 1}, headers=headers)
            assert response.status == 400, (method, path, response.status)
            assert "Authorization" in (await response.json())["error"]["message"]
    records = await read_topic(harness.settings, harness.settings.topics.config)
    assert len(records) == 2  # acme's workspace and key: the refused calls wrote nothing


async def test_workspace_put_get_delete_round_trip(harness):
    tenant = unique_id("acme")
    path = f"/v1/admin/workspaces/{tenant}/sales"
    body = {"actions": [echo_action("daily_summary", operation="request").model_dump(mode="json")],
            "connectors": {"http": {}}}
    put = await harness.client.put(path, json=body, headers=harness.admin_headers)
    assert put.status == 200
    got = await harness.client.get(path, headers=harness.admin_headers)
    workspace = WorkspaceConfig.model_validate(await got.json())
    assert workspace.tenant_id == tenant and workspace.action("daily_summary") is not None
    mismatch = await harness.client.put(
        path, json={**body, "tenant_id": "someone_else"}, headers=harness.admin_headers
    )
    assert mismatch.status == 400
    invalid = await harness.client.put(path, json={"actions": "nope"}, headers=harness.admin_headers)
    assert invalid.status == 400
    # What the router would refuse at every call is refused now, as `tenants apply` does.
    action = body["actions"][0]
    for broken, why in (
        ({**action, "input_schema": {"type": "objekt"}}, "invalid input_schema"),
        ({**action, "arguments": {"text": "{{ args.summary "}}, "invalid argument mapping"),
        # A reference the router could never follow, and a pattern past the regex
        # compiler's depth (it raised RecursionError: a 500).
        ({**action, "input_schema": {"properties": {"s": {"$ref": "#/$defs/missing"}}}}, "does not resolve"),
        ({**action, "input_schema": {"properties": {"s": {"pattern": "(" * 2000 + ")" * 2000}}}}, "nested"),
        # A connector or an operation no worker has (every call failed or was rejected).
        ({**action, "connector": "slak"}, "no connector 'slak'"),
        ({**action, "operation": "requst"}, "http has no operation 'requst' (it has request)"),
    ):
        refused = await harness.client.put(path, json={**body, "actions": [broken]}, headers=harness.admin_headers)
        assert refused.status == 400 and why in (await refused.json())["error"]["message"]
    # Larger than one config record may be (under the 2 MiB body limit): a 400 that says
    # so, not a 503 "broker unavailable" a client would retry for ever.
    many = [{**action, "name": f"a{i}", "description": "x" * 2000} for i in range(500)]
    large = await harness.client.put(
        path, data=io.BytesIO(json.dumps({**body, "actions": many}).encode()),
        headers={**harness.admin_headers, "Content-Type": "application/json"},
    )
    assert large.status == 400 and "more than the 1,000,000" in (await large.json())["error"]["message"]
    still = WorkspaceConfig.model_validate(await (await harness.client.get(path, headers=harness.admin_headers)).json())
    assert still == workspace
    assert (await harness.client.delete(path, headers=harness.admin_headers)).status == 204
    assert (await harness.client.get(path, headers=harness.admin_headers)).status == 404


async def test_workspace_writes_with_if_match_do_not_lose_a_concurrent_change(harness):
    # Two operators change one workspace from the same copy: with If-Match one write
    # wins and the other is a 412 (read again, redo), instead of one silently lost.
    tenant = unique_id("acme")
    path = f"/v1/admin/workspaces/{tenant}/sales"
    admin = harness.admin_headers
    action = echo_action("daily_summary", operation="request").model_dump(mode="json")
    body = {"actions": [action], "connectors": {"http": {}}}
    created = await harness.client.put(path, json=body, headers={**admin, "If-None-Match": "*"})
    assert created.status == 200
    again = await harness.client.put(path, json=body, headers={**admin, "If-None-Match": "*"})
    assert again.status == 412  # create-only: it exists
    got = await harness.client.get(path, headers=admin)
    etag = got.headers["ETag"]
    assert etag == created.headers["ETag"]
    with_x = {**body, "actions": [action, {**action, "name": "x"}]}
    with_y = {**body, "actions": [action, {**action, "name": "y"}]}
    answers = await asyncio.gather(
        harness.client.put(path, json=with_x, headers={**admin, "If-Match": etag}),
        harness.client.put(path, json=with_y, headers={**admin, "If-Match": etag}),
    )
    assert sorted(a.status for a in answers) == [200, 412]
    (winner,) = [a for a in answers if a.status == 200]
    stored = await (await harness.client.get(path, headers=admin)).json()
    assert [a["name"] for a in stored["actions"]] == [a["name"] for a in (await winner.json())["actions"]]
    stale = await harness.client.delete(path, headers={**admin, "If-Match": etag})
    assert stale.status == 412 and "read it again" in (await stale.json())["error"]["message"]
    # A version lower than the stored one is a stale copy (a CI job with an old file).
    newer = await harness.client.put(path, json={**body, "version": 6}, headers=admin)
    assert newer.status == 200
    older = await harness.client.put(path, json={**body, "version": 2}, headers=admin)
    assert older.status == 409 and "at version 6" in (await older.json())["error"]["message"]
    assert (await (await harness.client.get(path, headers=admin)).json())["version"] == 6
    # A body that states no version is not compared (clients that never send one).
    unstated = await harness.client.put(path, json=body, headers=admin)
    assert unstated.status == 200
    # A proxy may weaken the tag (W/), and a client may send several tags or lines.
    etag = unstated.headers["ETag"]
    weak = await harness.client.put(path, json=body, headers={**admin, "If-Match": f'W/{etag}'})
    assert weak.status == 200
    listed = CIMultiDict(admin)
    listed.add("If-Match", '"not-it"')
    listed.add("If-Match", f'"other", {weak.headers["ETag"]}')
    assert (await harness.client.put(path, json=body, headers=listed)).status == 200


async def test_a_tenants_keys_are_listed_without_hashes_so_they_can_be_revoked(harness):
    tenant, other = unique_id("acme"), unique_id("beta")
    admin = harness.admin_headers
    ids = []
    for owner in (tenant, tenant, other):
        created = await harness.client.post(
            "/v1/admin/api-keys", json={"tenant_id": owner, "spaces": ["sales"], "user_id": "ops"}, headers=admin
        )
        assert created.status == 201
        ids.append((await created.json())["key_id"])
    listed = await (await harness.client.get(f"/v1/admin/api-keys?tenant_id={tenant}", headers=admin)).json()
    assert [k["key_id"] for k in listed["keys"]] == ids[:2] and listed["truncated"] is False
    assert all("secret_hash" not in k and "salt" not in k for k in listed["keys"])
    assert (await harness.client.delete(f"/v1/admin/api-keys/{ids[0]}", headers=admin)).status == 204
    listed = await (await harness.client.get(f"/v1/admin/api-keys?tenant_id={tenant}", headers=admin)).json()
    assert [k["key_id"] for k in listed["keys"]] == ids[1:2]
    assert (await harness.client.get("/v1/admin/api-keys", headers=admin)).status == 400
    assert (await harness.client.get(f"/v1/admin/api-keys?tenant_id={tenant}")).status == 401


async def test_a_tenants_workspaces_are_listed_in_brief(harness):
    tenant = unique_id("acme")
    admin = harness.admin_headers
    action = echo_action("daily_summary", operation="request").model_dump(mode="json")
    for space in ("sales", "support"):
        put = await harness.client.put(f"/v1/admin/workspaces/{tenant}/{space}",
                                       json={"actions": [action], "connectors": {"http": {}}}, headers=admin)
        assert put.status == 200
    await harness.add_tenant(unique_id("beta"), "sales")  # another tenant's: not listed
    listed = await (await harness.client.get(f"/v1/admin/workspaces?tenant_id={tenant}", headers=admin)).json()
    assert [(w["space_id"], w["actions"], w["connectors"]) for w in listed["workspaces"]] == [
        ("sales", ["daily_summary"], ["http"]), ("support", ["daily_summary"], ["http"])]
    got = await harness.client.get(f"/v1/admin/workspaces/{tenant}/sales", headers=admin)
    assert listed["workspaces"][0]["etag"] == got.headers["ETag"] and listed["truncated"] is False
    assert (await harness.client.get("/v1/admin/workspaces?tenant_id=a b", headers=admin)).status == 400


async def test_created_api_key_works_once_shown_and_is_stored_only_hashed(harness, responder):
    tenant = unique_id("acme")
    ws = await harness.client.put(
        f"/v1/admin/workspaces/{tenant}/sales",
        json={"actions": [echo_action(operation="request").model_dump(mode="json")], "connectors": {"http": {}}},
        headers=harness.admin_headers,
    )
    assert ws.status == 200
    created = await harness.client.post(
        "/v1/admin/api-keys",
        json={"tenant_id": tenant, "spaces": ["sales"], "user_id": "ann", "role": "admin"},
        headers=harness.admin_headers,
    )
    assert created.status == 201
    key = await created.json()
    plaintext = key["api_key"]
    assert plaintext.startswith(f"sy_{key['key_id']}_")
    headers = {"Authorization": f"Bearer {plaintext}"}
    submitted = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=headers)
    assert submitted.status == 202
    shown = await harness.client.get(f"/v1/admin/api-keys/{key['key_id']}", headers=harness.admin_headers)
    assert "secret_hash" not in await shown.json()
    secret = plaintext.split("_", 2)[2]
    for record in await read_topic(harness.settings, harness.settings.topics.config):
        leaked = secret.encode() in (record.key or b"") + (record.value or b"")
        assert not leaked, "the key's secret is in a config record"
        if record.key == api_key_key(key["key_id"]).encode():
            stored = ApiKeyRecord.from_bytes(record.value)
            assert (stored.tenant_id, stored.user_id, stored.role) == (tenant, "ann", "admin")
    bad = await harness.client.post(
        "/v1/admin/api-keys", json={"tenant_id": "bad id!", "spaces": ["sales"], "user_id": "x"},
        headers=harness.admin_headers,
    )
    assert bad.status == 400


async def test_credentials_go_to_openbao_and_nowhere_else(harness, acme, stack_env, caplog):
    caplog.set_level(logging.DEBUG)
    secret_value = "xoxb-" + unique_id("SECRET")
    path = f"/v1/admin/credentials/{acme.tenant_id}/slack"
    response = await harness.client.put(
        path, json={"bot_token": secret_value, "team": "T1"}, headers=harness.admin_headers
    )
    assert response.status == 200
    text = await response.text()
    echoed = secret_value in text or "bot_token" in text
    assert not echoed, "the reply names the credential"
    assert (await response.json())["version"] >= 1

    client = hvac.Client(url=stack_env["VAULT_ADDR"], token=stack_env["VAULT_TOKEN"])
    stored = client.secrets.kv.v2.read_secret_version(
        path=secret_path(acme.tenant_id, "slack"), mount_point="secret", raise_on_deleted_version=True
    )
    stored_as_sent = stored["data"]["data"]["bot_token"] == secret_value
    assert stored_as_sent, "OpenBao holds another bot_token"

    prefix = harness.settings.topics
    for topic in (prefix.commands, prefix.config, prefix.results):
        for record in await read_topic(harness.settings, topic):
            blob = (record.key or b"") + (record.value or b"") + b"".join(v or b"" for _, v in record.headers or ())
            leaked = secret_value.encode() in blob
            assert not leaked, f"the credential is in a record of {topic}"
    for record in caplog.records:
        leaked = secret_value in record.getMessage() or secret_value in str(record.__dict__)
        assert not leaked, f"the credential is in a log record of {record.name}"

    assert (await harness.client.delete(path, headers=harness.admin_headers)).status == 204
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(
            path=secret_path(acme.tenant_id, "slack"), mount_point="secret",
            raise_on_deleted_version=True,
        )


async def test_credentials_with_unsafe_ids_or_bad_bodies_are_400(harness):
    for path, body in (
        ("/v1/admin/credentials/bad-tenant/slack", {"a": "b"}),
        ("/v1/admin/credentials/acme/Slack!", {"a": "b"}),
        ("/v1/admin/credentials/acme/fax", {"a": "b"}),  # no such connector
        ("/v1/admin/credentials/acme/slack", []),
        ("/v1/admin/credentials/acme/slack", {}),
        # No shape the connector reads: every command would fail credentials_missing.
        ("/v1/admin/credentials/acme/slack", {"bot_tokn": "xoxb-typo-value"}),
        ("/v1/admin/credentials/acme/gmail", {"access_token": 5}),
    ):
        response = await harness.client.put(path, json=body, headers=harness.admin_headers)
        assert response.status == 400, path
        assert "xoxb-typo-value" not in await response.text()
    typo = await harness.client.put("/v1/admin/credentials/acme/slack", json={"bot_tokn": "x"},
                                    headers=harness.admin_headers)
    assert "slack credentials need {bot_token} or {token}" in (await typo.json())["error"]["message"]
    deleted = await harness.client.delete("/v1/admin/credentials/acme/slak", headers=harness.admin_headers)
    assert deleted.status == 400  # as on PUT: no pool has such credentials


async def test_openapi_document_parses_and_lists_the_paths(harness):
    response = await harness.client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    for path in ("/v1/commands", "/v1/commands:batch", "/v1/commands/{command_id}",
                 "/v1/spaces/{space_id}/commands", "/v1/admin/api-keys",
                 "/v1/admin/workspaces/{tenant_id}/{space_id}",
                 "/v1/admin/credentials/{tenant_id}/{connector}", "/healthz", "/readyz"):
        assert path in document["paths"], path
    schemas = document["components"]["schemas"]
    assert {"SubmitRequest", "SubmitResponse", "BatchRequest", "CommandStatus", "Result"} <= set(schemas)
    refs = _refs(document)
    assert refs and all(ref.split("/")[-1] in schemas for ref in refs)


async def test_openapi_document_covers_every_http_route_of_the_app(harness):
    document = await (await harness.client.get("/openapi.json")).json()
    # MCP has its own spec; the dashboard is a page, /metrics Prometheus text.
    not_rest = ("/mcp", "/dashboard", "/metrics", "/openapi.json")
    missing = [
        (route.method, route.resource.canonical)
        for route in harness.client.app.router.routes()
        if route.method not in ("HEAD", "OPTIONS")
        and not route.resource.canonical.startswith(not_rest)
        and route.method.lower() not in document["paths"].get(route.resource.canonical, {})
    ]
    assert missing == []


def _refs(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


async def test_with_a_metrics_port_the_metrics_are_served_there_and_not_on_the_public_edge(settings):
    import aiohttp

    from switchyard.stack._procs import free_port

    port = free_port()
    async with IngressHarness(settings.model_copy(update={"metrics_port": port})) as replica:
        assert (await replica.client.get("/metrics")).status == 404
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as scraped:
            assert scraped.status == 200 and "switchyard_" in await scraped.text()
        # A probe pointed at the metrics port (as for the router and workers) reads the
        # same checks as the API port's /readyz (it read none: always ready).
        api = await (await replica.client.get("/readyz")).json()
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as probed:
            assert probed.status == 200 and (await probed.json())["checks"] == api["checks"]
        assert set(api["checks"]) == {"producer", "directory", "results", "accepted"}


async def test_without_a_metrics_port_the_edge_serves_metrics_to_the_admin_token_only(harness, acme):
    # The labels name every tenant: neither the public nor a tenant's key may read them.
    assert (await harness.client.get("/metrics")).status == 401
    assert (await harness.client.get("/metrics", headers=acme.headers)).status == 401
    scraped = await harness.client.get("/metrics", headers=harness.admin_headers)
    assert scraped.status == 200 and "switchyard_" in await scraped.text()


async def test_every_answer_of_the_edge_is_counted_by_route_pattern_and_status(harness, acme):
    # What an SRE alerts on at the edge: refusals (401, 400, 404) as much as acceptances,
    # by route pattern (not path: the label stays bounded whatever the ids).
    accepted = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
    assert accepted.status == 202
    command_id = (await accepted.json())["command_id"]
    assert (await harness.client.post("/v1/commands", json={"action": "echo"})).status == 401
    assert (await harness.client.post("/v1/commands", data=b"{", headers={**acme.headers,
            "Content-Type": "application/json"})).status == 400
    assert (await harness.client.get(f"/v1/commands/{command_id}", headers=acme.headers)).status in (200, 202)
    assert (await harness.client.get("/no/such/route")).status == 404
    text = await (await harness.client.get("/metrics", headers=harness.admin_headers)).text()
    for route, method, status in (("/v1/commands", "POST", 202), ("/v1/commands", "POST", 401),
                                  ("/v1/commands", "POST", 400), ("(unmatched)", "GET", 404)):
        assert f'switchyard_http_requests_total{{method="{method}",route="{route}",status="{status}"}} 1.0' in text
    assert 'route="/v1/commands/{command_id}"' in text and command_id not in text
    assert 'switchyard_http_request_seconds_count{method="POST",route="/v1/commands"} 3.0' in text
