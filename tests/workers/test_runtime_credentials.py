"""Credential logic with an in-memory Vault: expiry, coalesced refresh, CAS conflicts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import hvac.exceptions
import pytest

from core.errors import CasConflict, PermanentError, VaultError, VaultUnavailable
from core.vault import TenantSecret
from core.vault import _translate as vault_translate
from schemas import ErrorCode
from workers import _credentials as credentials_module
from workers._credentials import Credentials, token_expired


class MemoryVault:
    def __init__(self, data):
        self.secret = TenantSecret(dict(data), 1)
        self.conflict_once = False

    async def read(self, tenant_id):
        return self.secret

    async def write_cas(self, tenant_id, data, version):
        if self.conflict_once or version != self.secret.version:
            self.conflict_once = False
            self.secret = TenantSecret({**self.secret.data, "access_token": "theirs"}, self.secret.version + 1)
            raise CasConflict("lost")
        self.secret = TenantSecret(dict(data), version + 1)
        return version + 1

    def forget(self, tenant_id):
        pass


def test_token_expiry_reads_unix_seconds_and_iso_dates():
    assert token_expired({"expires_at": time.time() - 1})
    assert not token_expired({"expires_at": time.time() + 3600})
    assert token_expired({"expires_at": "2000-01-01T00:00:00+00:00"})
    assert not token_expired({})


async def test_concurrent_refreshes_for_one_tenant_call_the_provider_once():
    vault = MemoryVault({"access_token": "old"})
    release = asyncio.Event()
    calls = 0

    async def refresher(data):
        nonlocal calls
        calls += 1
        await release.wait()
        return {"access_token": "new"}

    creds = Credentials(vault, refresher=refresher)
    stale = await creds.get("t1")
    tasks = [asyncio.create_task(creds.refresh("t1", stale)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    fresh = await asyncio.gather(*tasks)
    assert calls == 1 and {f.data["access_token"] for f in fresh} == {"new"}
    # A late 401 with the old token re-reads instead of refreshing again.
    assert (await creds.refresh("t1", stale)).data["access_token"] == "new" and calls == 1


async def test_a_refresh_without_a_stated_lifetime_drops_the_old_tokens_expiry():
    # A provider may leave out expires_in: the new token must not inherit the old
    # token's (past) expiry, or every later command would refresh again and fail.
    vault = MemoryVault({"access_token": "old", "refresh_token": "r", "expires_at": time.time() - 60})

    async def refresher(data):
        renewed = {k: v for k, v in data.items() if k != "expires_at"}
        return {**renewed, "access_token": "new"}

    creds = Credentials(vault, refresher=refresher)
    stale = await creds.get("t1")
    assert token_expired(stale.data)
    fresh = await creds.refresh("t1", stale)
    assert fresh.data == {"access_token": "new", "refresh_token": "r"}
    assert not token_expired(vault.secret.data)


async def test_losing_the_check_and_set_race_adopts_the_winners_token():
    vault = MemoryVault({"access_token": "old"})
    vault.conflict_once = True

    async def refresher(data):
        return {"access_token": "mine"}

    creds = Credentials(vault, refresher=refresher)
    fresh = await creds.refresh("t1", await creds.get("t1"))
    assert fresh.data["access_token"] == "theirs" and fresh.version == 2


async def test_a_burst_on_a_cold_cache_shares_one_vault_read_per_tenant():
    vault = MemoryVault({"bot_token": "t"})
    release = asyncio.Event()
    reads = 0
    plain_read = vault.read

    async def slow_read(tenant_id):
        nonlocal reads
        reads += 1
        await release.wait()
        return await plain_read(tenant_id)

    vault.read = slow_read
    creds = Credentials(vault)
    burst = [asyncio.create_task(creds.get(t)) for t in ["a"] * 50 + ["b"] * 50]
    await asyncio.sleep(0)
    burst[0].cancel()  # one waiter giving up does not cancel the read the others share
    release.set()
    got = await asyncio.gather(*burst[1:])
    assert reads == 2 and creds.reads == 2
    assert {g.data["bot_token"] for g in got} == {"t"}
    await creds.get("a")  # cached now
    assert reads == 2


@pytest.fixture
def fast_saves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept tokens' background writes retry every 10 ms."""
    monkeypatch.setattr(credentials_module, "_WRITE_BACKOFF", 0.01)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - bounded; the writes are in the background
            await asyncio.sleep(0.01)


def fail_writes(vault: MemoryVault, error: Exception, *, times: int) -> None:
    """The vault's next ``times`` writes raise ``error``."""
    left = times
    plain_write = vault.write_cas

    async def write(tenant_id, data, version):
        nonlocal left
        if left:
            left -= 1
            raise error
        return await plain_write(tenant_id, data, version)

    vault.write_cas = write


class OutageVault(MemoryVault):
    """Refuses every write while ``down`` (Vault unreachable)."""

    def __init__(self, data):
        super().__init__(data)
        self.down = True

    async def write_cas(self, tenant_id, data, version):
        if self.down:
            raise VaultUnavailable("vault down")
        return await super().write_cas(tenant_id, data, version)


class RotatingProvider:
    """A token endpoint that rotates refresh tokens: each one works once."""

    def __init__(self) -> None:
        self.valid = {"r1"}
        self.issued = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, data):
        await self.gate.wait()
        if data["refresh_token"] not in self.valid:
            raise PermanentError(ErrorCode.CREDENTIALS_INVALID, "token endpoint: invalid_grant")
        self.valid.discard(data["refresh_token"])
        self.issued += 1
        refresh = f"r{self.issued + 1}"
        self.valid.add(refresh)
        return {"access_token": f"a{self.issued + 1}", "refresh_token": refresh}


async def test_two_processes_refreshing_at_once_both_end_up_with_the_rotated_token():
    # Both read version 1 and call the provider with r1; the second is refused
    # (invalid_grant) and takes the first one's write-back instead of failing.
    vault = MemoryVault({"access_token": "a1", "refresh_token": "r1"})
    provider = RotatingProvider()
    provider.gate.clear()
    first, second = Credentials(vault, refresher=provider), Credentials(vault, refresher=provider)
    stale = await first.get("t1")
    assert (await second.get("t1")).version == stale.version
    a = asyncio.create_task(first.refresh("t1", stale))
    b = asyncio.create_task(second.refresh("t1", stale))
    await asyncio.sleep(0.01)  # both have read version 1 and wait on the provider
    provider.gate.set()
    fresh = await asyncio.gather(a, b)
    assert provider.issued == 1
    assert [f.data["access_token"] for f in fresh] == ["a2", "a2"]
    assert vault.secret.data == {"access_token": "a2", "refresh_token": "r2"}


async def test_refreshed_tokens_survive_a_vault_outage_and_a_cancelled_caller():
    vault = MemoryVault({"access_token": "a1", "refresh_token": "r1"})
    fail_writes(vault, VaultUnavailable("vault down"), times=2)
    provider = RotatingProvider()
    creds = Credentials(vault, refresher=provider)
    stale = await creds.get("t1")
    caller = asyncio.create_task(creds.refresh("t1", stale))
    await asyncio.sleep(0)
    caller.cancel()  # its command's deadline: the refresh it started goes on
    await asyncio.gather(caller, return_exceptions=True)
    async with asyncio.timeout(10):
        while vault.secret.version == stale.version:  # noqa: ASYNC110 - bounded; no event to wait on
            await asyncio.sleep(0.05)
    assert vault.secret.data == {"access_token": "a2", "refresh_token": "r2"}
    assert (await creds.get("t1")).data["access_token"] == "a2"


async def test_refreshes_still_running_past_the_shutdown_wait_are_counted_and_cancelled():
    vault = MemoryVault({"access_token": "a1", "refresh_token": "r1"})
    provider = RotatingProvider()
    provider.gate.clear()  # a token endpoint that never answers
    creds = Credentials(vault, refresher=provider)
    assert await creds.finish_refreshes(0.05) == 0
    stale = await creds.get("t1")
    caller = asyncio.create_task(creds.refresh("t1", stale))
    await asyncio.sleep(0.01)
    assert await creds.finish_refreshes(0.05) == 1
    with pytest.raises(asyncio.CancelledError):
        await caller  # its waiter sees the cut, not a hang
    assert vault.secret.version == 1


async def test_tokens_issued_while_vault_stays_down_are_used_and_stored_once_it_is_back(
    fast_saves: None,
) -> None:
    vault = OutageVault({"access_token": "a1", "refresh_token": "r1"})
    provider = RotatingProvider()
    creds = Credentials(vault, refresher=provider)
    # The rotating provider voided r1 when it issued a2: a2 must be used, not dropped.
    fresh = await creds.refresh("t1", await creds.get("t1"))
    assert fresh.data == {"access_token": "a2", "refresh_token": "r2"}
    assert await creds.get("t1") is fresh
    newer = await creds.refresh("t1", fresh)  # a2 expired too, still in the outage
    assert newer.data == {"access_token": "a3", "refresh_token": "r3"} and await creds.get("t1") is newer
    vault.down = False
    await until(lambda: vault.secret.version > 1)
    assert vault.secret.data == {"access_token": "a3", "refresh_token": "r3"}
    assert (await creds.get("t1")).version == vault.secret.version
    assert await creds.finish_refreshes(1.0) == 0


async def test_kept_tokens_give_way_to_another_processs_refresh_and_are_counted_at_shutdown(
    fast_saves: None, caplog: pytest.LogCaptureFixture
) -> None:
    vault = OutageVault({"access_token": "a1", "refresh_token": "r1"})
    creds = Credentials(vault, refresher=RotatingProvider())
    await creds.refresh("t1", await creds.get("t1"))
    assert await creds.finish_refreshes(0.05) == 1  # still down: its write is cut
    assert "never stored" in caplog.text

    creds = Credentials(vault, refresher=RotatingProvider())
    await creds.refresh("t1", await creds.get("t1"))
    vault.conflict_once = True  # another process wrote first
    vault.down = False
    async with asyncio.timeout(10):
        while (await creds.get("t1")).data["access_token"] != "theirs":  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_refresh_overlapping_the_write_of_kept_tokens_keeps_its_own_tokens(fast_saves: None) -> None:
    # Vault comes back while a refresh from kept tokens waits on the provider: the kept
    # tokens are stored meanwhile, and the refresh's newer ones go over that version.
    vault = OutageVault({"access_token": "a1", "refresh_token": "r1"})
    provider = RotatingProvider()
    creds = Credentials(vault, refresher=provider)
    kept = await creds.refresh("t1", await creds.get("t1"))
    provider.gate.clear()
    second = asyncio.ensure_future(creds.refresh("t1", kept))
    await asyncio.sleep(0.01)  # waiting on the provider with r2
    vault.down = False
    await until(lambda: vault.secret.version > 1)
    assert vault.secret.data["refresh_token"] == "r2"
    provider.gate.set()
    newer = await second
    assert newer.data == {"access_token": "a3", "refresh_token": "r3"}
    await until(lambda: vault.secret.data["refresh_token"] == "r3")
    assert (await creds.get("t1")).data["refresh_token"] == "r3"
    assert await creds.finish_refreshes(1.0) == 0


@pytest.mark.parametrize(
    "answer", [hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway, hvac.exceptions.RateLimitExceeded]
)
def test_vaults_500_502_and_429_are_retried_like_an_unreachable_vault(answer: type[Exception]) -> None:
    assert isinstance(vault_translate("write", answer("no")), VaultUnavailable)
    assert not isinstance(vault_translate("write", hvac.exceptions.InvalidRequest("no")), VaultUnavailable)


async def test_tokens_issued_by_a_refresh_vault_refuses_to_store_are_kept_and_stored_later(
    fast_saves: None,
) -> None:
    # Any refusal but a lost check-and-set (here an unexpected error, as after a policy
    # mistake): the provider has voided r1 by now, so dropping a2/r2 locks the tenant out.
    vault = MemoryVault({"access_token": "a1", "refresh_token": "r1"})
    fail_writes(vault, VaultError("write: UnexpectedError"), times=3)
    provider = RotatingProvider()
    creds = Credentials(vault, refresher=provider)
    fresh = await creds.refresh("t1", await creds.get("t1"))
    assert fresh.data == {"access_token": "a2", "refresh_token": "r2"}
    assert (await creds.get("t1")).data == fresh.data
    await until(lambda: vault.secret.version > 1)
    assert vault.secret.data == {"access_token": "a2", "refresh_token": "r2"}
    assert provider.issued == 1
