"""OpenBao layout: tenant-scoped tokens, per-connector pools, check-and-set write-back."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import requests

from core.errors import CasConflict, VaultForbidden, VaultUnavailable
from core.vault import AppRoleCredentials, PoolVault, TokenFile, VaultAdmin


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def slack_pool(
    vault_admin: VaultAdmin, stack_env: dict[str, str]
) -> AsyncIterator[PoolVault]:
    creds = await vault_admin.bootstrap_pool("slack")
    pool = PoolVault(stack_env["VAULT_ADDR"], "slack", creds)
    try:
        yield pool
    finally:
        pool.close()


async def test_tenant_token_reads_its_own_credentials_and_gets_403_on_another_tenants(
    vault_admin: VaultAdmin, slack_pool: PoolVault, stack_env: dict[str, str]
) -> None:
    acme, beta = _tenant(), _tenant()
    await vault_admin.put_credentials(acme, "slack", {"bot_token": "xoxb-acme"})
    await vault_admin.put_credentials(beta, "slack", {"bot_token": "xoxb-beta"})

    secret = await slack_pool.read(acme)
    assert dict(secret.data) == {"bot_token": "xoxb-acme"}
    with pytest.raises(VaultForbidden) as refused:
        await slack_pool.read(beta, as_tenant=acme)
    assert "xoxb" not in str(refused.value)

    # The same refusal on the wire: tenant A's token gets HTTP 403 for B's secret path.
    acme_client = await slack_pool.tenant_client(acme)
    url = f"{stack_env['VAULT_ADDR']}/v1/secret/data/tenants/{beta}/slack"
    response = await asyncio.to_thread(
        requests.get, url, headers={"X-Vault-Token": acme_client.token}, timeout=10
    )
    assert response.status_code == 403


async def test_tenants_whose_ids_differ_only_in_case_keep_separate_policies(
    vault_admin: VaultAdmin, slack_pool: PoolVault
) -> None:
    # Vault folds policy names to lower case: without care, "Ab…" and "ab…" would share
    # one policy, rewritten by each store to cover only the tenant stored last.
    lower = _tenant()
    upper = lower.upper()
    await vault_admin.put_credentials(upper, "slack", {"bot_token": "xoxb-upper"})
    await vault_admin.put_credentials(lower, "slack", {"bot_token": "xoxb-lower"})

    assert dict((await slack_pool.read(upper)).data) == {"bot_token": "xoxb-upper"}
    assert dict((await slack_pool.read(lower)).data) == {"bot_token": "xoxb-lower"}
    with pytest.raises(VaultForbidden):
        await slack_pool.read(lower, as_tenant=upper)
    with pytest.raises(VaultForbidden):
        await slack_pool.read(upper, as_tenant=lower)


async def test_slack_pool_approle_cannot_read_or_mint_tokens_for_gmail_credentials(
    vault_admin: VaultAdmin, stack_env: dict[str, str]
) -> None:
    acme = _tenant()
    await vault_admin.put_credentials(acme, "gmail", {"refresh_token": "gmail-secret"})
    await vault_admin.bootstrap_pool("gmail")
    slack_creds: AppRoleCredentials = await vault_admin.bootstrap_pool("slack")
    slack = PoolVault(stack_env["VAULT_ADDR"], "slack", slack_creds)
    # A pool configured for gmail but holding the Slack AppRole: it must be refused.
    impostor = PoolVault(stack_env["VAULT_ADDR"], "gmail", slack_creds)
    try:
        with pytest.raises(VaultForbidden):
            await slack.read_other_connector_path(acme, "gmail")
        with pytest.raises(VaultForbidden):
            await impostor.read(acme)
    finally:
        slack.close()
        impostor.close()


async def test_a_write_back_with_a_stale_cas_version_is_refused(
    vault_admin: VaultAdmin, slack_pool: PoolVault
) -> None:
    acme = _tenant()
    await vault_admin.put_credentials(acme, "slack", {"access_token": "v1"})
    seen = await slack_pool.read(acme)

    newer = await slack_pool.write_cas(acme, {"access_token": "v2"}, seen.version)
    assert newer == seen.version + 1
    with pytest.raises(CasConflict):
        await slack_pool.write_cas(acme, {"access_token": "lost-race"}, seen.version)
    current = await slack_pool.read(acme)
    assert (dict(current.data), current.version) == ({"access_token": "v2"}, newer)


def _sockets_to(port: int) -> int:
    """Established TCP connections of this process to 127.0.0.1:``port`` (Linux /proc)."""
    own = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                own.add(target[8:-1])
    count = 0
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and int(remote.split(":")[1], 16) == port and inode in own:
            count += 1
    return count


async def test_many_tenants_tokens_share_a_bounded_number_of_sockets(
    vault_admin: VaultAdmin, slack_pool: PoolVault, stack_env: dict[str, str]
) -> None:
    tenants = [_tenant() for _ in range(40)]
    for tenant in tenants:
        await vault_admin.put_credentials(tenant, "slack", {"bot_token": f"xoxb-{tenant}"})
    for tenant in tenants:
        assert dict((await slack_pool.read(tenant)).data) == {"bot_token": f"xoxb-{tenant}"}
    assert slack_pool.cached_tokens == 40
    # One per worker thread at most, not one per cached tenant token.
    port = int(stack_env["VAULT_ADDR"].rsplit(":", 1)[1])
    assert _sockets_to(port) <= 8 + 1  # the threads' pool, and the admin client's


def test_the_pools_env_file_is_private_even_where_a_readable_one_or_a_symlink_stood(tmp_path: Path) -> None:
    from switchyard.vault_setup import write_private

    env_file = tmp_path / "pools.env"
    env_file.write_text("old\n")
    env_file.chmod(0o644)
    write_private(env_file, "SWITCHYARD_VAULT_SECRET_ID_SLACK=s\n")
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.read_text() == "SWITCHYARD_VAULT_SECRET_ID_SLACK=s\n"

    elsewhere = tmp_path / "public.txt"
    elsewhere.write_text("")
    env_file.unlink()
    env_file.symlink_to(elsewhere)
    write_private(env_file, "secret\n")
    assert not env_file.is_symlink() and elsewhere.read_text() == ""
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pools")] == []


async def test_a_tenant_without_credentials_costs_no_login_per_read(
    vault_admin: VaultAdmin, slack_pool: PoolVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    logins = 0
    real_login = slack_pool._login

    def counting_login():  # type: ignore[no-untyped-def]
        nonlocal logins
        logins += 1
        return real_login()

    monkeypatch.setattr(slack_pool, "_login", counting_login)
    stored = _tenant()
    await vault_admin.put_credentials(stored, "slack", {"bot_token": "xoxb-s"})
    await slack_pool.read(stored)
    never_stored = _tenant()  # enabled but never given credentials: no policy exists
    for _ in range(5):
        with pytest.raises(VaultForbidden):
            await slack_pool.read(never_stored)
    assert logins <= 1
    assert dict((await slack_pool.read(stored)).data) == {"bot_token": "xoxb-s"}


async def test_a_pool_on_the_vault_agents_token_file_follows_the_token_it_is_given(
    vault_admin: VaultAdmin, stack_env: dict[str, str], tmp_path: Path
) -> None:
    # What the Helm chart's agent mode gives a worker: a token of the pool's policy in a
    # file the agent keeps fresh. A replaced token is read again once Vault refuses the old.
    approle = await vault_admin.bootstrap_pool("slack")
    logging_in = PoolVault(stack_env["VAULT_ADDR"], "slack", approle)
    tenant = _tenant()
    await vault_admin.put_credentials(tenant, "slack", {"bot_token": "xoxb-agent"})
    sink = tmp_path / "token"
    pool = PoolVault(stack_env["VAULT_ADDR"], "slack", TokenFile(str(sink)))
    try:
        with pytest.raises(VaultUnavailable, match="cannot read the Vault token file"):
            await pool.read(tenant)
        first = await logging_in._pool_token_client()
        sink.write_text(first.token + "\n")
        assert dict((await pool.read(tenant)).data) == {"bot_token": "xoxb-agent"}

        logging_in._pool_client = None
        second = await logging_in._pool_token_client()
        sink.write_text(second.token)
        await asyncio.to_thread(first.auth.token.revoke_self)
        pool.forget(tenant)  # the next read mints: Vault refuses the old token, the file is read again
        assert dict((await pool.read(tenant)).data) == {"bot_token": "xoxb-agent"}
    finally:
        pool.close()
        logging_in.close()


async def test_a_cancelled_mint_is_an_interrupted_mint_for_those_sharing_it() -> None:
    pool = PoolVault("http://127.0.0.1:1", "slack", AppRoleCredentials("role", "secret"))
    gate = asyncio.Event()

    async def login_never_answers() -> None:
        await gate.wait()

    pool._pool_token_client = login_never_answers  # type: ignore[method-assign,assignment]
    try:
        first = asyncio.create_task(pool.tenant_client("acme"))
        await asyncio.sleep(0)
        second = asyncio.create_task(pool.tenant_client("acme"))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(VaultUnavailable, match="interrupted"):  # not cancelled: nobody cancelled it
            await second
    finally:
        pool.close()


def test_bootstrapping_one_pool_keeps_the_other_pools_ids_in_the_env_file(
    stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from switchyard import vault_setup

    for name in ("VAULT_ADDR", "VAULT_TOKEN"):
        monkeypatch.setenv(name, stack_env[name])
    env_file = tmp_path / "pools.env"
    env_file.write_text("# kept\nSWITCHYARD_VAULT_ROLE_ID_GMAIL=stale\n")

    def bootstrap(connector: str) -> dict[str, str]:
        args = argparse.Namespace(env_file=env_file, connector=[connector])
        assert vault_setup.run(args) == 0
        lines = env_file.read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    slack = bootstrap("slack")
    gmail = bootstrap("gmail")
    assert gmail["SWITCHYARD_VAULT_SECRET_ID_SLACK"] == slack["SWITCHYARD_VAULT_SECRET_ID_SLACK"]
    assert gmail["SWITCHYARD_VAULT_ROLE_ID_GMAIL"] != "stale" and "SWITCHYARD_VAULT_SECRET_ID_GMAIL" in gmail
    assert env_file.read_text().startswith("# kept\n")
    assert slack["SWITCHYARD_VAULT_SECRET_ID_SLACK"] not in capsys.readouterr().out


async def test_the_ingress_policy_stores_credentials_and_reads_none_back(
    vault_admin: VaultAdmin, slack_pool: PoolVault, stack_env: dict[str, str]
) -> None:
    policy = await vault_admin.write_ingress_policy()
    created = await asyncio.to_thread(
        requests.post, f"{stack_env['VAULT_ADDR']}/v1/auth/token/create",
        json={"policies": [policy], "ttl": "5m", "no_default_policy": True},
        headers={"X-Vault-Token": stack_env["VAULT_TOKEN"]}, timeout=10,
    )  # fmt: skip
    assert created.status_code == 200
    ingress = VaultAdmin(stack_env["VAULT_ADDR"], created.json()["auth"]["client_token"])
    tenant = _tenant()
    try:
        # What the admin API does: store, check, delete; and the pool reads what it stored.
        assert await ingress.put_credentials(tenant, "slack", {"bot_token": "xoxb-kept"}) >= 1
        assert await ingress.has_credentials(tenant, "slack")
        assert dict((await slack_pool.read(tenant)).data) == {"bot_token": "xoxb-kept"}
        # It reads no secret back, and writes no policy but a tenant's.
        url = f"{stack_env['VAULT_ADDR']}/v1/secret/data/tenants/{tenant}/slack"
        token = created.json()["auth"]["client_token"]
        read = await asyncio.to_thread(requests.get, url, headers={"X-Vault-Token": token}, timeout=10)
        assert read.status_code == 403
        other = await asyncio.to_thread(
            requests.put, f"{stack_env['VAULT_ADDR']}/v1/sys/policy/everything",
            json={"policy": 'path "*" { capabilities = ["read"] }'}, headers={"X-Vault-Token": token}, timeout=10,
        )  # fmt: skip
        assert other.status_code == 403
        await ingress.delete_credentials(tenant, "slack")
        assert not await ingress.has_credentials(tenant, "slack")
    finally:
        ingress.close()


async def test_a_periodic_token_is_renewed_and_a_root_token_needs_nothing(
    vault_admin: VaultAdmin, stack_env: dict[str, str]
) -> None:
    policy = await vault_admin.write_ingress_policy()
    created = await asyncio.to_thread(
        requests.post, f"{stack_env['VAULT_ADDR']}/v1/auth/token/create",
        json={"policies": [policy], "period": "30s"}, headers={"X-Vault-Token": stack_env["VAULT_TOKEN"]}, timeout=10,
    )  # fmt: skip
    periodic = VaultAdmin(stack_env["VAULT_ADDR"], created.json()["auth"]["client_token"])
    root = VaultAdmin(stack_env["VAULT_ADDR"], stack_env["VAULT_TOKEN"])
    try:
        assert 25 <= (await periodic.renew_self() or 0) <= 30
        assert await root.renew_self() is None
        async with asyncio.timeout(5):
            await root.keep_renewed()  # returns at once: nothing to renew
    finally:
        periodic.close()
        root.close()
