"""Credentials against real OpenBao: per-tenant tokens, pool isolation, OAuth refresh."""

from __future__ import annotations

import asyncio
import time

import pytest
from _cycles import CyclicGarbage
from _runtime_support import (
    CONNECTOR,
    Upstream,
    all_results,
    command,
    eventually,
    pool_running,
    produce,
    put_tenant,
    wait_results,
)

from core.errors import CredentialsMissing, PermanentError, VaultForbidden
from core.vault import PoolVault
from schemas import ErrorCode, ResultStatus
from workers._credentials import Credentials
from workers._pool import PoolOptions

pytestmark = pytest.mark.integration


def _tenant(settings, tag: str) -> str:
    return f"{tag}{settings.topic_prefix[1:9]}"


async def test_tenant_a_token_is_refused_tenant_b_secret(settings, vault_admin):
    a, b = _tenant(settings, "va"), _tenant(settings, "vb")
    approle = await vault_admin.bootstrap_pool(CONNECTOR)
    await vault_admin.put_credentials(a, CONNECTOR, {"access_token": "a-token"})
    await vault_admin.put_credentials(b, CONNECTOR, {"access_token": "b-token"})
    vault = PoolVault(vault_admin._client.url, CONNECTOR, approle)
    try:
        assert (await vault.read(a)).data == {"access_token": "a-token"}
        with pytest.raises(VaultForbidden) as refused:
            await vault.read(b, as_tenant=a)
        assert "b-token" not in str(refused.value)
        assert (await vault.read(b)).data == {"access_token": "b-token"}
    finally:
        vault.close()


async def test_slack_pool_cannot_read_gmail_secrets(settings, vault_admin):
    tenant = _tenant(settings, "vs")
    slack = await vault_admin.bootstrap_pool("slack")
    await vault_admin.bootstrap_pool("gmail")
    await vault_admin.put_credentials(tenant, "gmail", {"access_token": "gmail-secret"})
    vault = PoolVault(vault_admin._client.url, "slack", slack)
    try:
        with pytest.raises(VaultForbidden):
            await vault.read_other_connector_path(tenant, "gmail")
        # Its own tenant token covers only t-<tenant>-slack, where nothing is stored.
        with pytest.raises((CredentialsMissing, VaultForbidden)):
            await vault.read(tenant)
    finally:
        vault.close()


async def test_a_tenant_without_credentials_leaves_no_garbage_cycle(settings, vault_admin):
    """A failed read must be freed by reference counting: a cycle through its traceback
    held the command's frames and hvac's HTTP response (~36 KiB per failed command) until
    a full collection, which the processes' GC settings (core.heap) make rare."""
    approle = await vault_admin.bootstrap_pool(CONNECTOR)
    vault = PoolVault(vault_admin._client.url, CONNECTOR, approle)
    credentials = Credentials(vault)
    tenants = [_tenant(settings, f"gc{i}") for i in range(3)]
    try:
        await vault_admin.put_credentials(tenants[0] + "x", CONNECTOR, {"access_token": "warm"})
        await credentials.get(tenants[0] + "x")  # pool login and lazy imports done before counting
        with CyclicGarbage() as left:
            for tenant in tenants:
                with pytest.raises(PermanentError) as missing:
                    await credentials.get(tenant)
                assert missing.value.code is ErrorCode.CREDENTIALS_MISSING
            del missing
    finally:
        vault.close()
    assert left.exceptions == []


async def test_a_401_triggers_exactly_one_refresh_and_one_retry(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = _tenant(settings, "o")
        stale = await put_tenant(vault_admin, upstream, tenant, valid=False)
        cmd = command(tenant)
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [cmd])
            await wait_results(settings, {cmd.command_id})
        results = await all_results(settings)
        stored = await vault_admin._run("read", vault_admin._client.secrets.kv.v2.read_secret_version,
                                        path=f"tenants/{tenant}/{CONNECTOR}", raise_on_deleted_version=True)

    (result,) = results[cmd.command_id]
    assert result.status is ResultStatus.SUCCEEDED
    assert upstream.refreshes[tenant] == 1
    calls = upstream.calls_for(cmd.command_id)
    assert [c.token for c in calls][0] == stale and len(calls) == 2
    assert calls[1].token.startswith(f"fresh-{tenant}")
    # Written back with check-and-set as a new KV version.
    assert stored["data"]["metadata"]["version"] == 2
    assert stored["data"]["data"]["access_token"] == calls[1].token
    assert stored["data"]["data"]["refresh_token"] == f"r-{tenant}"


async def test_a_refresh_in_flight_at_shutdown_still_reaches_vault(settings, vault_admin):
    # The provider has issued the tokens (a rotating one has voided the stored refresh
    # token by then): stopping the pool must not drop them between the token endpoint
    # and Vault, even when the command that asked for them is cut.
    upstream = Upstream(token_gate=asyncio.Event())
    async with upstream.running():
        tenant = _tenant(settings, "os")
        await put_tenant(vault_admin, upstream, tenant, valid=False)
        options = PoolOptions(tier_delays=(0.2, 0.5), breaker_threshold=1_000, shutdown_grace=0.2)
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await produce(settings, [command(tenant)])
            async with asyncio.timeout(30):
                await upstream.token_waiting.wait()
            pool.request_stop()
            # The provider answers only after the pool has cut the command (0.2 s).
            await asyncio.sleep(1.0)
            upstream.token_gate.set()
        stored = await vault_admin._run("read", vault_admin._client.secrets.kv.v2.read_secret_version,
                                        path=f"tenants/{tenant}/{CONNECTOR}", raise_on_deleted_version=True)

    assert upstream.refreshes[tenant] == 1
    assert stored["data"]["metadata"]["version"] == 2
    assert stored["data"]["data"]["access_token"].startswith(f"fresh-{tenant}")


async def test_the_whole_stop_fits_its_budget_even_with_a_refresh_that_never_ends(settings, vault_admin):
    # An SRE review: each stage of a stop is bounded (commands 10 s, the final commit,
    # its visibility 5 s, token write-backs 30 s) but their sum could pass the chart's
    # 60 s grace, and SIGKILL then cuts whatever runs. The stop as a whole now has one.
    upstream = Upstream(token_gate=asyncio.Event())  # the provider never answers
    async with upstream.running():
        tenant = _tenant(settings, "ob")
        await put_tenant(vault_admin, upstream, tenant, valid=False)
        options = PoolOptions(tier_delays=(0.2, 0.5), breaker_threshold=1_000, shutdown_grace=0.2,
                              shutdown_within=3.0)  # fmt: skip
        loop = asyncio.get_running_loop()
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await produce(settings, [command(tenant)])
            async with asyncio.timeout(30):
                await upstream.token_waiting.wait()
            pool.request_stop()
            stopping = loop.time()
        stopped = loop.time() - stopping
        upstream.token_gate.set()
    assert stopped < 15.0  # the refresh alone had 30 s before: within the budget of 3 s, and then some


async def test_a_flush_stuck_on_the_broker_does_not_hold_the_stop_past_its_budget(settings, vault_admin):
    # A diff review: the stop waited for the outbox's flusher before any bound applied,
    # so a commit stuck on a frozen broker held it until SIGKILL.
    upstream = Upstream()
    async with upstream.running():
        options = PoolOptions(tier_delays=(0.2, 0.5), breaker_threshold=1_000, shutdown_grace=0.2,
                              shutdown_within=3.0)  # fmt: skip
        loop = asyncio.get_running_loop()
        flushing = asyncio.Event()

        async def frozen() -> None:
            flushing.set()
            await asyncio.Event().wait()  # the broker never answers

        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            pool.outbox.flush = frozen  # type: ignore[method-assign]
            async with asyncio.timeout(30):
                await flushing.wait()  # the flusher is inside a flush now
            pool.request_stop()
            stopping = loop.time()
        stopped = loop.time() - stopping
    assert stopped < 15.0  # unbounded before; 3 s of budget, and then some


async def test_concurrent_401s_for_one_tenant_cause_a_single_refresh(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = _tenant(settings, "oc")
        await put_tenant(vault_admin, upstream, tenant, valid=False)
        commands = [command(tenant) for _ in range(20)]
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, commands)
            await wait_results(settings, {c.command_id for c in commands})
        results = await all_results(settings)

    assert all([r.status for r in results[c.command_id]] == [ResultStatus.SUCCEEDED] for c in commands)
    assert upstream.refreshes[tenant] == 1
    # Every command was called at most twice (one 401 and one retry).
    assert max(len(upstream.calls_for(c.command_id)) for c in commands) <= 2


async def test_expired_access_token_is_refreshed_before_calling_upstream(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = _tenant(settings, "ox")
        await put_tenant(vault_admin, upstream, tenant, expires_at=time.time() - 60)
        cmd = command(tenant)
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [cmd])
            await wait_results(settings, {cmd.command_id})

    assert upstream.refreshes[tenant] == 1
    (call,) = upstream.calls_for(cmd.command_id)
    assert call.token.startswith(f"fresh-{tenant}")


async def test_a_second_401_after_the_refresh_fails_the_command(settings, vault_admin):
    upstream = Upstream(refuse_refreshed=True)
    async with upstream.running():
        tenant = _tenant(settings, "or")
        await put_tenant(vault_admin, upstream, tenant, valid=False)
        cmd = command(tenant)
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [cmd])
            results = await wait_results(settings, {cmd.command_id})

    (result,) = results[cmd.command_id]
    assert result.status is ResultStatus.FAILED
    assert result.error is not None and result.error.code is ErrorCode.CREDENTIALS_INVALID
    assert upstream.refreshes[tenant] == 1 and len(upstream.calls_for(cmd.command_id)) == 2


async def test_concurrent_refresh_in_two_processes_resolves_by_check_and_set(settings, vault_admin):
    tenant = _tenant(settings, "cas")
    approle = await vault_admin.bootstrap_pool(CONNECTOR)
    await vault_admin.put_credentials(tenant, CONNECTOR, {"access_token": "old", "refresh_token": "r"})
    calls: list[str] = []
    release = asyncio.Event()

    def refresher(name: str):
        async def refresh(data):
            calls.append(name)
            await release.wait()
            return {"access_token": f"new-{name}"}

        return refresh

    vault_one = PoolVault(vault_admin._client.url, CONNECTOR, approle)
    vault_two = PoolVault(vault_admin._client.url, CONNECTOR, approle)
    one, two = Credentials(vault_one, refresher=refresher("one")), Credentials(vault_two, refresher=refresher("two"))
    try:
        stale = await one.get(tenant)
        assert (await two.get(tenant)).version == stale.version
        tasks = [asyncio.create_task(one.refresh(tenant, stale)), asyncio.create_task(two.refresh(tenant, stale))]
        await eventually(lambda: len(calls) == 2, within=10)
        release.set()
        first, second = await asyncio.gather(*tasks)
    finally:
        vault_one.close()
        vault_two.close()

    # Both called their token endpoint, only one write won; the loser adopted the winner's token.
    assert first.data == second.data and first.version == second.version == stale.version + 1


async def test_credentials_an_upstream_echoes_back_never_reach_the_result(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = _tenant(settings, "oe")
        token = await put_tenant(vault_admin, upstream, tenant)
        cmd = command(tenant, echo_auth=True)
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [cmd])
            await wait_results(settings, {cmd.command_id})
        (result,) = (await all_results(settings))[cmd.command_id]
    assert result.status is ResultStatus.SUCCEEDED
    assert result.output is not None
    assert result.output["request_headers"] == {"Authorization": "Bearer ***"}
    assert result.output["tenant"] == tenant  # other strings untouched
    leaked = token in result.to_bytes().decode()
    assert not leaked, "the token is in the Result"


async def test_deleted_credentials_stop_the_next_command_with_no_cache(settings, vault_admin):
    # SWITCHYARD_CREDENTIAL_CACHE_SECONDS=0: a credential deleted through the admin API
    # (a leaked token) is not used for the next command; the default keeps it 30 s.
    upstream = Upstream()
    uncached = settings.model_copy(update={"credential_cache_seconds": 0.0})
    async with upstream.running():
        tenant = _tenant(settings, "vd")
        await put_tenant(vault_admin, upstream, tenant)
        first, second = command(tenant), command(tenant)
        async with pool_running(uncached, vault_admin, upstream) as pool:
            assert pool.credentials._ttl == 0.0
            await produce(settings, [first])
            await wait_results(settings, {first.command_id})
            await vault_admin.delete_credentials(tenant, CONNECTOR)
            await produce(settings, [second])
            results = await wait_results(settings, {second.command_id})
    (result,) = results[second.command_id]
    assert result.status is ResultStatus.FAILED and result.error is not None
    assert result.error.code is ErrorCode.CREDENTIALS_MISSING
