"""Identity at the edge: keys, workspaces, and refused tenant claims (nothing published)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from ingress.testing import read_topic

WWW = 'Bearer realm="switchyard"'


async def assert_nothing_published(harness) -> None:
    assert await read_topic(harness.settings, harness.settings.topics.commands) == []


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer sy_0123456789abcdef_" + "x" * 43,  # well-formed, unknown key id
    ],
)
async def test_missing_or_invalid_key_is_401_with_www_authenticate(harness, acme, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in (("POST", "/v1/commands"), ("GET", "/v1/commands/abcdefgh1234")):
        response = await harness.client.request(method, path, json={"action": "echo"}, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == WWW
        assert (await response.json())["error"]["code"] == "unauthorized"
    await assert_nothing_published(harness)


async def test_right_key_id_with_a_wrong_secret_is_401(harness, acme):
    wrong = acme.api_key[:-4] + ("AAAA" if not acme.api_key.endswith("AAAA") else "BBBB")
    for _ in range(2):  # the second answer comes from the negative cache
        response = await harness.client.post(
            "/v1/commands", json={"action": "echo"}, headers={"Authorization": f"Bearer {wrong}"}
        )
        assert response.status == 401
    await assert_nothing_published(harness)


async def test_key_used_for_a_workspace_it_does_not_own_is_403(harness, acme, beta):
    by_header = {**acme.headers, "X-Switchyard-Space": "support"}
    assert (await harness.client.post("/v1/commands", json={"action": "echo"}, headers=by_header)).status == 403
    by_path = await harness.client.post(
        "/v1/spaces/support/commands", json={"action": "echo"}, headers=acme.headers
    )
    assert by_path.status == 403
    conflicting = await harness.client.post(
        "/v1/spaces/sales/commands", json={"action": "echo"},
        headers={**acme.headers, "X-Switchyard-Space": "other"},
    )
    assert conflicting.status == 400
    await assert_nothing_published(harness)


@pytest.mark.parametrize(
    ("extra_headers", "body"),
    [
        ({"X-Switchyard-Tenant": "OTHER"}, {"action": "echo"}),
        ({"X-Tenant-Id": "OTHER"}, {"action": "echo"}),
        ({}, {"action": "echo", "tenant_id": "OTHER"}),
        ({}, {"action": "echo", "_meta": {"tenant_id": "OTHER"}}),
        ({}, {"action": "echo", "arguments": {"tenant": "OTHER"}}),
        ({}, {"action": "echo", "arguments": {"_meta": {"tenantId": "OTHER"}}}),
        ({}, {"action": "echo", "space_id": "support"}),
        ({}, {"items": [{"action": "echo"}], "tenant_id": "OTHER"}),
    ],
)
async def test_spoofed_tenant_claims_are_403_and_publish_nothing(harness, acme, beta, extra_headers, body):
    headers = {**acme.headers, **dict.fromkeys(extra_headers, beta.tenant_id)}
    path = "/v1/commands:batch" if "items" in body else "/v1/commands"
    body = _replace(body, "OTHER", beta.tenant_id)
    response = await harness.client.post(path, json=body, headers=headers)
    assert response.status == 403, await response.text()
    assert (await response.json())["error"]["code"] == "forbidden"
    await assert_nothing_published(harness)


@pytest.mark.parametrize(
    "header", ["Authorization", "X-Switchyard-Tenant", "X-Tenant-Id", "X-Switchyard-Space", "Idempotency-Key"]
)
async def test_a_repeated_credential_or_scope_header_is_400_and_publishes_nothing(harness, acme, beta, header):
    # First-value-wins would hide which tenant, workspace or key a request meant (a proxy
    # may add a copy); two copies of any of them are refused, even when the first is fine.
    first, second = {
        "Authorization": (acme.headers["Authorization"], beta.headers["Authorization"]),
        "X-Switchyard-Space": (acme.space_id, "other"),
        "Idempotency-Key": ("a1", "b1"),
    }.get(header, (acme.tenant_id, beta.tenant_id))
    headers = CIMultiDict(acme.headers)
    headers.popall(header, None)
    headers.add(header, first)
    headers.add(header, second)
    for path, body in (("/v1/commands", {"action": "echo"}), ("/v1/commands:batch", {"items": [{"action": "echo"}]})):
        response = await harness.client.post(path, json=body, headers=headers)
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["message"] == f"the {header} header appears more than once"
    await assert_nothing_published(harness)


def _replace(value, old, new):
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return new if value == old else value


async def test_claiming_ones_own_tenant_is_allowed(harness, acme):
    response = await harness.client.post(
        "/v1/commands",
        json={"action": "echo", "tenant_id": acme.tenant_id},
        headers={**acme.headers, "X-Switchyard-Tenant": acme.tenant_id},
    )
    assert response.status == 202


async def test_key_with_several_workspaces_must_name_one(harness):
    multi = await harness.add_tenant("multi_" + harness.settings.topic_prefix[1:8], "sales",
                                     spaces=["sales", "support"])
    unnamed = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=multi.headers)
    assert unnamed.status == 400
    message = (await unnamed.json())["error"]["message"]
    assert "/v1/spaces/{space_id}/" in message and "/mcp/{space_id}" in message  # the way on each edge
    await harness.add_tenant(multi.tenant_id, "support")  # the second workspace's config
    named = await harness.client.post(
        "/v1/commands", json={"action": "echo"}, headers={**multi.headers, "X-Switchyard-Space": "support"}
    )
    assert named.status == 202
    # Its status URL names the workspace: followed as it is, it needs no header.
    body = await named.json()
    assert body["status_url"] == named.headers["Location"] == f"/v1/spaces/support/commands/{body['command_id']}"
    assert (await harness.client.get(body["status_url"], headers=multi.headers)).status in (200, 404)


async def test_revoked_key_is_refused_at_once(harness, acme):
    ok = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
    assert ok.status == 202  # the verified key is now cached
    revoke = await harness.client.delete(
        f"/v1/admin/api-keys/{acme.key_id}", headers=harness.admin_headers
    )
    assert revoke.status == 204
    again = await harness.client.post("/v1/commands", json={"action": "echo"}, headers=acme.headers)
    assert again.status == 401


async def test_a_caller_going_away_does_not_fail_others_waiting_on_the_same_key_check(settings):
    """Concurrent first requests with one key share one scrypt run; cancelling the
    request that started it (a client disconnect) must not cancel the others' check."""
    import asyncio
    from types import SimpleNamespace

    from ingress.admin import new_api_key
    from ingress.directory import Directory

    directory = Directory(settings)
    plaintext, record = new_api_key(tenant_id="acme", spaces=["sales"], user_id="ann")
    directory.apply(SimpleNamespace(key=f"api_key:{record.key_id}".encode(), value=record.to_bytes()))
    first = asyncio.create_task(directory.authenticate_async(plaintext, None))
    second = asyncio.create_task(directory.authenticate_async(plaintext, None))
    await asyncio.sleep(0)  # both are waiting on the one check now
    first.cancel()
    async with asyncio.timeout(30):
        identity = await second
    assert (identity.tenant_id, identity.space_id) == ("acme", "sales")
    assert first.cancelled() and not directory._checking
    assert (await directory.authenticate_async(plaintext, None)).user_id == "ann"  # cached


async def test_a_flood_of_wrong_secrets_for_one_key_does_not_hold_up_another_tenants_check(
    settings, monkeypatch
):
    import asyncio
    import threading
    from types import SimpleNamespace

    from ingress import directory as directory_module
    from ingress.admin import new_api_key
    from ingress.directory import Directory
    from ingress.errors import RateLimited, Unauthorized

    directory = Directory(settings)
    keys = {}
    for tenant in ("mallory", "beta"):
        plaintext, record = new_api_key(tenant_id=tenant, spaces=["s"], user_id="u")
        directory.apply(SimpleNamespace(key=f"api_key:{record.key_id}".encode(), value=record.to_bytes()))
        keys[tenant] = plaintext
    gate = threading.Event()  # mallory's checks take as long as the test wants
    real = directory_module.verify_secret

    def verify(secret, record):
        if record.tenant_id == "mallory":
            gate.wait(30)
        return real(secret, record)

    monkeypatch.setattr(directory_module, "verify_secret", verify)
    prefix = keys["mallory"].rsplit("_", 1)[0]
    flood = [
        asyncio.ensure_future(directory.authenticate_async(f"{prefix}_{i:043d}", None))
        for i in range(directory_module._CHECKS_PER_KEY)
    ]
    await asyncio.sleep(0.05)
    with pytest.raises(RateLimited):  # one more while those wait: refused at once
        await directory.authenticate_async(f"{prefix}_{'9' * 43}", None)
    try:
        async with asyncio.timeout(10):  # with the scrypt slots all held by the flood: never
            assert (await directory.authenticate_async(keys["beta"], None)).tenant_id == "beta"
    finally:
        gate.set()
    outcomes = await asyncio.gather(*flood, return_exceptions=True)
    assert all(isinstance(outcome, Unauthorized) for outcome in outcomes)
    assert not directory._key_checks and not directory._key_turns and not directory._checking


async def test_a_flood_of_wrong_secrets_for_a_key_id_does_not_lock_out_its_holder(settings, monkeypatch):
    # A security review locked a key out with wrong secrets sent under its id (no secret
    # needed): once its checks were full, its holder got 429 whenever its cached check
    # had expired (60 s). A secret that matched the key's current hash still matches it:
    # that verdict holds for as long as the hash does, without a new check.
    import asyncio
    import threading
    from types import SimpleNamespace

    from ingress import directory as directory_module
    from ingress.admin import new_api_key
    from ingress.directory import Directory
    from ingress.errors import Unauthorized

    directory = Directory(settings, cache_ttl=0.05)
    plaintext, record = new_api_key(tenant_id="acme", spaces=["s"], user_id="u")
    directory.apply(SimpleNamespace(key=f"api_key:{record.key_id}".encode(), value=record.to_bytes()))
    assert (await directory.authenticate_async(plaintext, None)).tenant_id == "acme"
    gate = threading.Event()
    real = directory_module.verify_secret
    monkeypatch.setattr(directory_module, "verify_secret", lambda secret, stored: gate.wait(30) and real(secret, stored))
    prefix = plaintext.rsplit("_", 1)[0]
    flood = [
        asyncio.ensure_future(directory.authenticate_async(f"{prefix}_{i:043d}", None))
        for i in range(directory_module._CHECKS_PER_KEY)
    ]
    await asyncio.sleep(0.1)  # past the cache TTL, with every check slot of the key taken
    try:
        assert (await directory.authenticate_async(plaintext, None)).tenant_id == "acme"
    finally:
        gate.set()
        await asyncio.gather(*flood, return_exceptions=True)
    # A revocation still holds at once: every request reads the key's current record.
    directory.apply(SimpleNamespace(
        key=f"api_key:{record.key_id}".encode(), value=record.model_copy(update={"revoked": True}).to_bytes()
    ))
    with pytest.raises(Unauthorized):
        await directory.authenticate_async(plaintext, None)


async def test_a_secret_refused_after_its_key_changed_is_not_checked_again_and_again(settings, monkeypatch):
    from types import SimpleNamespace

    from ingress import directory as directory_module
    from ingress.admin import new_api_key
    from ingress.directory import Directory
    from ingress.errors import Unauthorized

    directory = Directory(settings)
    plaintext, record = new_api_key(tenant_id="acme", spaces=["s"], user_id="u")
    directory.apply(SimpleNamespace(key=f"api_key:{record.key_id}".encode(), value=record.to_bytes()))
    checks = 0
    real = directory_module.verify_secret

    def counting(secret, stored):
        nonlocal checks
        checks += 1
        return real(secret, stored)

    monkeypatch.setattr(directory_module, "verify_secret", counting)
    assert (await directory.authenticate_async(plaintext, None)).tenant_id == "acme"
    _, other = new_api_key(tenant_id="acme", spaces=["s"], user_id="u")  # the same key id, a new secret
    changed = record.model_copy(update={"secret_hash": other.secret_hash, "salt": other.salt})
    directory.apply(SimpleNamespace(key=f"api_key:{record.key_id}".encode(), value=changed.to_bytes()))
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await directory.authenticate_async(plaintext, None)
    assert checks == 2  # the first success, then one failure remembered
