"""Tenant credentials for one connector pool: Vault reads, OAuth refresh with coalescing.

Every read goes through :class:`core.vault.PoolVault`, which holds one short-lived token
per tenant whose policy covers only that tenant's secret for this connector. Secrets are
kept in memory for a short time (``cache_ttl``) so a busy tenant does not cost a Vault
round trip per command; a 401 always re-reads before refreshing.

OAuth refresh: at most one refresh per tenant runs at a time in this process; others
wait for its outcome. Before calling the token endpoint the secret is re-read: if its KV
version moved on, another process already refreshed and that token is used. The write
back uses check-and-set, so of two processes refreshing at once only one write wins and
the loser re-reads the winner's token.

Issued tokens are never dropped while this process lives: a provider that rotates
refresh tokens has voided the stored one by then. When Vault stays unreachable past a
few retries, or refuses the write for any reason but a lost check-and-set, the new
tokens are kept in memory ("unsaved"), used in place of Vault's for that tenant, and
written in the background until Vault takes them. (A crash before that
write loses them: the tenant then needs a new consent.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from core.errors import (
    CasConflict,
    CredentialsMissing,
    PermanentError,
    RetryableError,
    VaultError,
    VaultForbidden,
    VaultUnavailable,
)
from core.vault import TenantSecret
from schemas import ErrorCode

__all__ = ["Credentials", "CredentialStoreDown", "Refresher", "VaultLike", "token_expired"]

logger = logging.getLogger(__name__)

# Refresh a little before the provider's expiry so the request does not race it.
_EXPIRY_SKEW = 5.0

# Write-back of refreshed tokens while Vault is unreachable: 0.5 + 1 + 2 s of retries.
_WRITE_ATTEMPTS = 4
_WRITE_BACKOFF = 0.5
# Then in the background, for tokens kept unsaved: back-off doubling up to this.
_SAVE_BACKOFF_MAX = 30.0
# After a refused refresh, how long another process's write-back is waited for.
_NEWER_READS = 5
_NEWER_WAIT = 0.2

Refresher = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


class VaultLike(Protocol):
    async def read(self, tenant_id: str) -> TenantSecret: ...

    async def write_cas(self, tenant_id: str, data: Mapping[str, Any], version: int) -> int: ...

    def forget(self, tenant_id: str) -> None: ...


def token_expired(data: Mapping[str, Any], now: float | None = None) -> bool:
    """True when ``expires_at`` (unix seconds or ISO 8601) is past, or nearly."""
    raw = data.get("expires_at")
    if raw is None or raw == "":
        return False
    if isinstance(raw, int | float):
        expires = float(raw)
    else:
        try:
            expires = float(raw)
        except (TypeError, ValueError):
            try:
                expires = datetime.fromisoformat(str(raw)).timestamp()
            except ValueError:
                return False
    return (time.time() if now is None else now) >= expires - _EXPIRY_SKEW


class CredentialStoreDown(RetryableError):
    """The credential store (Vault) did not answer. It is this deployment's own
    infrastructure, not the tenant's API: nothing was sent upstream, so the executor
    waits for the store instead of spending the command's attempts (``workers._execute``)."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.INTERNAL, "credential store unavailable")


def _translate(exc: VaultError, tenant_id: str) -> Exception:
    if isinstance(exc, CredentialsMissing):
        return PermanentError(ErrorCode.CREDENTIALS_MISSING, f"no credentials stored for {tenant_id}")
    if isinstance(exc, VaultForbidden):
        return PermanentError(
            ErrorCode.CREDENTIALS_MISSING, f"credentials of {tenant_id} are not readable by this pool"
        )
    if isinstance(exc, VaultUnavailable):
        return CredentialStoreDown()
    return RetryableError(ErrorCode.INTERNAL, f"credential store error ({type(exc).__name__})")


class Credentials:
    """Reads and refreshes one connector's tenant credentials."""

    def __init__(
        self,
        vault: VaultLike,
        *,
        refresher: Refresher | None = None,
        cache_ttl: float = 30.0,
        max_cached: int = 10_000,
    ) -> None:
        self._vault = vault
        self._refresher = refresher
        self._ttl = cache_ttl
        self._max = max_cached
        self._cache: OrderedDict[str, tuple[TenantSecret, float]] = OrderedDict()
        self._refreshing: dict[str, asyncio.Future[TenantSecret]] = {}
        # One Vault read per tenant at a time: a burst of a tenant's commands arriving on a
        # cold (or just expired) cache shares that read instead of each making its own.
        self._reading: dict[str, asyncio.Task[TenantSecret]] = {}
        # Issued tokens Vault has not taken yet (unreachable), and their background writes.
        self._unsaved: dict[str, TenantSecret] = {}
        self._saving: dict[str, asyncio.Task[None]] = {}
        # Kept tokens a background write stored, with the version they got: a refresh
        # that started from them writes over that version, not the one they replaced.
        self._stored_as: dict[str, tuple[TenantSecret, int]] = {}
        self.refreshes = 0  # token endpoint calls made by this process
        self.reads = 0  # Vault reads made by this process

    async def _read(self, tenant_id: str) -> TenantSecret:
        self.reads += 1
        try:
            secret = await self._vault.read(tenant_id)
        except VaultError as exc:
            error = _translate(exc, tenant_id)
        else:
            self._cache[tenant_id] = (secret, time.monotonic() + self._ttl)
            self._cache.move_to_end(tenant_id)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
            return secret
        try:
            raise error  # outside the handler: no __context__ holding the Vault error's frames
        finally:
            del error  # nor a cycle through this frame (see core.vault._Threaded._run)

    async def get(self, tenant_id: str) -> TenantSecret:
        """The tenant's current credentials (cached briefly).

        Raises:
            PermanentError: nothing stored or not readable (CREDENTIALS_MISSING).
            CredentialStoreDown: Vault unreachable.
            RetryableError: another Vault error (INTERNAL).
        """
        unsaved = self._unsaved.get(tenant_id)
        if unsaved is not None:
            return unsaved  # newer than Vault's, whose refresh token may be void
        cached = self._cache.get(tenant_id)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        reading = self._reading.get(tenant_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(tenant_id))
            self._reading[tenant_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(tenant_id, None))
        # Shielded: one waiter cancelled (its command's deadline) must not cancel the
        # read the others are waiting for.
        try:
            return await asyncio.shield(reading)
        finally:
            # A failed task keeps its exception, whose traceback holds this frame: kept
            # here too, every failed read would be a reference cycle holding the command's
            # whole call path (frames, locals, the command) until a full GC collection.
            del reading

    async def refresh(self, tenant_id: str, stale: TenantSecret) -> TenantSecret:
        """Fresh credentials after ``stale`` was found expired or refused (coalesced).

        The refresh runs in a task of its own: a waiter cancelled (its deadline, a
        shutdown) must not lose tokens the provider has already issued.

        Raises:
            PermanentError: no refresher, or the provider refused the refresh.
            RetryableError: Vault or the token endpoint unreachable.
        """
        pending = self._refreshing.get(tenant_id)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(tenant_id, stale))
            self._refreshing[tenant_id] = pending

            def done(task: asyncio.Future[TenantSecret]) -> None:
                if self._refreshing.get(tenant_id) is task:
                    del self._refreshing[tenant_id]
                if not task.cancelled():
                    task.exception()  # retrieved: no "never retrieved" warning without waiters

            pending.add_done_callback(done)
        try:
            return await asyncio.shield(pending)
        finally:
            del pending  # no cycle through a failed refresh's traceback (see get)

    async def _refresh(self, tenant_id: str, stale: TenantSecret) -> TenantSecret:
        self._cache.pop(tenant_id, None)
        current = self._unsaved.get(tenant_id) or await self._read(tenant_id)
        if current.data != stale.data:
            return current  # someone else refreshed since we read it (kept tokens keep
            # their data but change version as they are stored: the data tells)
        if self._refresher is None:
            raise PermanentError(ErrorCode.CREDENTIALS_INVALID, "credentials rejected, cannot refresh")
        self.refreshes += 1
        try:
            refreshed = await self._refresher(current.data)
        except PermanentError as exc:
            if exc.code is not ErrorCode.CREDENTIALS_INVALID:
                raise
            # A provider that rotates refresh tokens refuses ours once another process
            # (which read the same version) refreshed first: its token is in Vault by now,
            # or within moments.
            newer = await self._newer_than(tenant_id, current.version)
            if newer is None:
                raise
            return newer
        data = {**current.data, **refreshed}
        if "expires_at" not in refreshed:
            # The stored expiry was the old access token's; this one's is unknown.
            data.pop("expires_at", None)
        base = current.version
        stored = self._stored_as.pop(tenant_id, None)
        if stored is not None and stored[0] is current:
            base = stored[1]  # kept tokens this refresh started from were stored meanwhile
        if tenant_id in self._saving:
            # Vault has not taken the last tokens yet: their writer stores these instead
            # (over the version its write in flight gets, if any).
            return self._keep_unsaved(tenant_id, TenantSecret(data=data, version=base))
        try:
            version = await self._write_back(tenant_id, data, base)
        except VaultError:
            # Whatever Vault answered, the provider has issued these (and, if it rotates
            # refresh tokens, voided the stored one): keep them and store them later.
            return self._keep_unsaved(tenant_id, TenantSecret(data=data, version=base))
        if version is None:  # lost the check-and-set race: the winner's token
            self._cache.pop(tenant_id, None)
            return await self._read(tenant_id)
        self._unsaved.pop(tenant_id, None)  # what it held was the base of this write
        fresh = TenantSecret(data=data, version=version)
        self._cache[tenant_id] = (fresh, time.monotonic() + self._ttl)
        return fresh

    def _keep_unsaved(self, tenant_id: str, fresh: TenantSecret) -> TenantSecret:
        """Use ``fresh`` (its version: the one it replaces in Vault) until a background
        write stores it."""
        self._unsaved[tenant_id] = fresh
        if tenant_id not in self._saving:
            logger.warning("credential store unreachable: new tokens of %s kept until it is back", tenant_id)
            task = asyncio.ensure_future(self._save(tenant_id))
            self._saving[tenant_id] = task

            def done(finished: asyncio.Future[None]) -> None:  # also when cancelled unstarted
                if self._saving.get(tenant_id) is finished:
                    del self._saving[tenant_id]

            task.add_done_callback(done)
        return fresh

    async def _save(self, tenant_id: str) -> None:
        try:
            await self._save_kept(tenant_id)
        finally:
            # At once, not a loop tick later: a refresh ending now must see no writer.
            if self._saving.get(tenant_id) is asyncio.current_task():
                del self._saving[tenant_id]

    async def _save_kept(self, tenant_id: str) -> None:
        delay = _WRITE_BACKOFF
        while (unsaved := self._unsaved.get(tenant_id)) is not None:
            try:
                version = await self._vault.write_cas(tenant_id, unsaved.data, unsaved.version)
            except CasConflict:
                # Another process stored its own refresh first: Vault's is the one to use.
                logger.warning("new tokens of %s superseded by another process's refresh", tenant_id)
                self._unsaved.pop(tenant_id, None)
                self._cache.pop(tenant_id, None)
                return
            except VaultError as exc:
                logger.debug("writing the kept tokens of %s failed (%s)", tenant_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _SAVE_BACKOFF_MAX)
                continue
            newer = self._unsaved.get(tenant_id)
            if newer is not None and newer is not unsaved:
                # Refreshed again while this write ran: those go next, over this version.
                self._unsaved[tenant_id] = TenantSecret(newer.data, version)
                continue
            self._unsaved.pop(tenant_id, None)
            self._stored_as[tenant_id] = (unsaved, version)
            self._cache[tenant_id] = (TenantSecret(unsaved.data, version), time.monotonic() + self._ttl)
            logger.info("kept tokens of %s stored", tenant_id)

    async def _write_back(self, tenant_id: str, data: Mapping[str, Any], version: int) -> int | None:
        """The new version, or None when another writer won; retried while Vault is down.

        Raises:
            VaultError: still down after the retries, or any other refusal (the caller
                keeps the tokens).
        """
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                return await self._vault.write_cas(tenant_id, data, version)
            except CasConflict:
                return None
            except VaultUnavailable:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(_WRITE_BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    async def _newer_than(self, tenant_id: str, version: int) -> TenantSecret | None:
        for _ in range(_NEWER_READS):
            self._cache.pop(tenant_id, None)
            secret = await self._read(tenant_id)
            if secret.version != version:
                return secret
            await asyncio.sleep(_NEWER_WAIT)
        return None

    async def finish_refreshes(self, within: float) -> int:
        """Wait (bounded) for refreshes and writes of kept tokens in flight; the number
        still running at the timeout.

        A refresh's tokens are issued by the provider before they reach Vault; a process
        that closed its HTTP session and Vault client under a running refresh would drop
        them, and with a rotating provider the stored refresh token is void by then.
        Those still running at the timeout are cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        unfinished: set[asyncio.Future[Any]] = set()
        # Refreshes first: one that finishes with Vault down starts a background write.
        for running in (self._refreshing, self._saving):
            pending = list(running.values())
            if pending:
                _, late = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
                unfinished |= late
        for task in unfinished:
            task.cancel()
        # Their cancellation has run before the caller closes what they use.
        await asyncio.gather(*unfinished, return_exceptions=True)
        if self._unsaved:
            logger.error(
                "stopping with new tokens of %d tenant(s) never stored in Vault: they may need a new consent",
                len(self._unsaved),
            )
        return len(unfinished)

    def invalidate(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)
