"""Vault (OpenBao in tests) access: admin provisioning and per-tenant credential reads.

hvac is synchronous (requests), so every call runs in a small thread pool and never
blocks the event loop. Errors from hvac/requests are translated into ``core.errors``;
messages never carry tokens or secret values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
import requests.adapters

from . import vault_layout as layout
from .errors import CasConflict, CredentialsMissing, VaultError, VaultForbidden, VaultUnavailable

__all__ = ["AppRoleCredentials", "PoolVault", "TenantSecret", "TokenFile", "VaultAdmin", "tls_verify"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

# A cached tenant token is dropped this many seconds before it expires.
_EXPIRY_MARGIN = 20.0


# Vault's answers that say "not now" rather than "no": sealed or standby (503), a 500, a
# proxy's 502, its request rate limit (429). Retried like an unreachable Vault.
_TRANSIENT = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
)


def _translate(what: str, exc: Exception) -> VaultError:
    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultForbidden(f"{what}: permission denied")
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return CredentialsMissing(f"{what}: nothing stored")
    if isinstance(exc, hvac.exceptions.InvalidRequest) and "check-and-set" in str(exc):
        return CasConflict(f"{what}: check-and-set version mismatch")
    if isinstance(exc, (requests.RequestException, *_TRANSIENT, OSError)):
        return VaultUnavailable(f"{what}: Vault unreachable ({type(exc).__name__})")
    return VaultError(f"{what}: {type(exc).__name__}")


class _Threaded:
    """Runs blocking hvac calls on a private thread pool."""

    def __init__(self, max_workers: int = 8) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vault")

    async def _run(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except VaultError:
            raise  # already ours (a VaultUnavailable is an OSError too)
        except (hvac.exceptions.VaultError, requests.RequestException, OSError) as exc:
            error = _translate(what, exc)
        # Raised outside the handler, so without a __context__ (hvac's exception, whose
        # traceback holds the HTTP response and session objects, ~30 KiB), and not kept
        # in this frame, which the error's own traceback holds: no reference cycle left
        # for the garbage collector by every failed call.
        try:
            raise error
        finally:
            del error

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class AppRoleCredentials:
    role_id: str
    secret_id: str

    def __repr__(self) -> str:  # never print the secret id
        return f"AppRoleCredentials(role_id={self.role_id!r}, secret_id=***)"


@dataclass(frozen=True, slots=True)
class TokenFile:
    """A pool token that another process keeps fresh in a file: the Vault Agent's token
    sink (``/vault/secrets/token``), renewed or replaced by the agent. It is read again
    every ``reread_every`` seconds and whenever Vault refuses it."""

    path: str
    reread_every: float = 60.0


@dataclass(frozen=True, slots=True)
class TenantSecret:
    """A tenant's credentials for one connector and the KV version they were read at."""

    data: Mapping[str, Any]
    version: int

    def __repr__(self) -> str:
        return f"TenantSecret(keys={sorted(self.data)}, version={self.version})"


def tls_verify(ca_file: str | None = None) -> bool | str:
    """What Vault's certificate is checked against: ``ca_file`` (``Settings.vault_ca_file``,
    from ``VAULT_CACERT`` as the Vault CLI reads it), else the system's CAs. Passed to every
    client: hvac would take the variable only at import, and not at all for a client given
    its own HTTP session, as the pools' are."""
    return ca_file or True


class VaultAdmin(_Threaded):
    """Provisioning with an admin token: the stack bootstrap and the ingress admin API."""

    def __init__(self, addr: str, token: str, *, mount: str = "secret", ca_file: str | None = None) -> None:
        super().__init__(max_workers=4)
        self._client = hvac.Client(url=addr, token=token, timeout=10, verify=tls_verify(ca_file))
        self.mount = mount

    def _ensure_kv(self) -> None:
        mounts = self._client.sys.list_mounted_secrets_engines()
        data = mounts.get("data", mounts)
        if f"{self.mount}/" not in data:
            self._client.sys.enable_secrets_engine("kv", path=self.mount, options={"version": "2"})

    def _ensure_approle_auth(self) -> None:
        methods = self._client.sys.list_auth_methods()
        data = methods.get("data", methods)
        if "approle/" not in data:
            self._client.sys.enable_auth_method("approle")

    def _bootstrap_pool(self, connector: str, keep: AppRoleCredentials | None) -> AppRoleCredentials:
        self._ensure_kv()
        self._ensure_approle_auth()
        self._client.write_data(
            f"auth/token/roles/{layout.token_role_name(connector)}",
            data={
                "allowed_policies_glob": f"t-*-{connector}",
                "orphan": True,
                "renewable": False,
                "token_explicit_max_ttl": layout.TENANT_TOKEN_MAX_TTL,
            },
        )
        self._client.sys.create_or_update_policy(
            layout.pool_policy_name(connector), layout.pool_policy_hcl(connector)
        )
        role = layout.approle_name(connector)
        self._client.auth.approle.create_or_update_approle(
            role,
            token_policies=[layout.pool_policy_name(connector)],
            token_ttl="1h",
            token_max_ttl="4h",
        )
        if keep is not None:
            # Re-provisioning an emptied server (a restarted dev server): the pools keep the
            # ids they already hold, so running workers log in again without a restart.
            self._client.auth.approle.update_role_id(role, keep.role_id)
            self._client.auth.approle.create_custom_secret_id(role, keep.secret_id)
            return keep
        role_id = self._client.auth.approle.read_role_id(role)["data"]["role_id"]
        secret_id = self._client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
        return AppRoleCredentials(role_id=role_id, secret_id=secret_id)

    async def bootstrap_pool(self, connector: str, *, keep: AppRoleCredentials | None = None) -> AppRoleCredentials:
        """Create (idempotently) the token role, pool policy and AppRole of one connector pool.

        Returns the pool's AppRole credentials: ``keep`` when given (installed as the role
        id and a custom secret id), else the role id and a new secret id.
        """
        return await self._run(f"bootstrap pool {connector}", self._bootstrap_pool, connector, keep)

    def _write_ingress_policy(self) -> None:
        self._ensure_kv()
        self._client.sys.create_or_update_policy(layout.INGRESS_POLICY, layout.ingress_policy_hcl(self.mount))

    async def write_ingress_policy(self) -> str:
        """Create (or update) the policy of the ingress admin API's token; returns its name."""
        await self._run("write the ingress policy", self._write_ingress_policy)
        return layout.INGRESS_POLICY

    def _renew_self(self) -> float | None:
        info = self._client.auth.token.lookup_self()["data"]
        if not info.get("renewable"):
            return None
        renewed = self._client.auth.token.renew_self()
        return float(renewed["auth"]["lease_duration"])

    async def renew_self(self) -> float | None:
        """Renew this client's own token; its new TTL in seconds, or None when it cannot
        be renewed (a root token, which never expires, or a non-renewable one)."""
        return await self._run("renew the token", self._renew_self)

    async def keep_renewed(self, *, every_at_most: float = 3600.0) -> None:
        """Renew the token until cancelled, at a third of its TTL (a periodic token, as the
        README's ingress token is, expires unless renewed within its period)."""
        while True:
            try:
                ttl = await self.renew_self()
            except VaultError as exc:
                logger.warning("renewing the Vault token failed (%s); trying again in a minute", exc)
                await asyncio.sleep(60.0)
                continue
            if ttl is None:
                return
            await asyncio.sleep(min(every_at_most, max(5.0, ttl / 3)))

    def _ingress_token(self, ttl: str) -> str:
        self._write_ingress_policy()
        created = self._client.auth.token.create(policies=[layout.INGRESS_POLICY], ttl=ttl, no_parent=True)
        return str(created["auth"]["client_token"])

    async def ingress_token(self, ttl: str = "720h") -> str:
        """A token of the ingress's policy alone (an orphan, so it outlives this one's
        children), for a local system's ingress."""
        return await self._run("create the ingress token", self._ingress_token, ttl)

    def _put(self, tenant_id: str, connector: str, data: Mapping[str, Any]) -> int:
        self._client.sys.create_or_update_policy(
            layout.tenant_policy_name(tenant_id, connector),
            layout.tenant_policy_hcl(tenant_id, connector, self.mount),
        )
        response = self._client.secrets.kv.v2.create_or_update_secret(
            path=layout.secret_path(tenant_id, connector), secret=dict(data), mount_point=self.mount
        )
        return int(response["data"]["version"])

    async def put_credentials(self, tenant_id: str, connector: str, data: Mapping[str, Any]) -> int:
        """Store a tenant's connector credentials and the policy that scopes them.

        Returns the new KV version.
        """
        return await self._run(
            f"store credentials {tenant_id}/{connector}", self._put, tenant_id, connector, data
        )

    def _delete(self, tenant_id: str, connector: str) -> None:
        self._client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=layout.secret_path(tenant_id, connector), mount_point=self.mount
        )

    async def delete_credentials(self, tenant_id: str, connector: str) -> None:
        await self._run(f"delete credentials {tenant_id}/{connector}", self._delete, tenant_id, connector)

    def _has(self, tenant_id: str, connector: str) -> bool:
        try:
            self._client.secrets.kv.v2.read_secret_metadata(
                path=layout.secret_path(tenant_id, connector), mount_point=self.mount
            )
        except hvac.exceptions.InvalidPath:
            return False
        return True

    async def has_credentials(self, tenant_id: str, connector: str) -> bool:
        return await self._run(f"check credentials {tenant_id}/{connector}", self._has, tenant_id, connector)


@dataclass(slots=True)
class _CachedToken:
    # The token alone, not an hvac.Client: a client weighs ~8 KiB before its first request
    # and several times that after (its API objects are built on use), so a cache of
    # 10,000 tenants' clients held hundreds of MiB; one costs ~40 µs to build per use.
    token: str
    expires_at: float


class PoolVault(_Threaded):
    """A connector pool's view of Vault: AppRole login (or the Vault Agent's token), then
    one narrow token per tenant.

    The pool token can only mint tenant tokens through the connector's token role; each
    tenant token's only policy is ``t-<tenant>-<connector>``, so code running for tenant
    A holds a token that cannot read tenant B's secret.
    """

    def __init__(
        self,
        addr: str,
        connector: str,
        approle: AppRoleCredentials | TokenFile,
        *,
        mount: str = "secret",
        token_ttl: int = layout.TENANT_TOKEN_TTL,
        max_cached_tokens: int = 10_000,
        ca_file: str | None = None,
    ) -> None:
        super().__init__(max_workers=8)
        self.addr = addr
        self.connector = connector
        self.mount = mount
        self._approle = approle
        self._token_ttl = token_ttl
        self._max_cached = max_cached_tokens
        self._pool_client: hvac.Client | None = None
        self._pool_expires_at = 0.0
        self._tokens: dict[str, _CachedToken] = {}
        self._minting: dict[str, asyncio.Future[_CachedToken]] = {}
        # One HTTP session for every token's client: its pool holds at most a socket per
        # thread, however many tenants have a token cached (one session each would keep
        # a socket per tenant open, and run a busy pool out of file descriptors).
        self._session = requests.Session()
        # hvac takes the session's verify over VAULT_CACERT: set it here.
        self._session.verify = tls_verify(ca_file)
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=8)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def _client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token, timeout=10, session=self._session)

    def _login(self) -> tuple[hvac.Client, float]:
        if isinstance(self._approle, TokenFile):
            try:
                with open(self._approle.path, encoding="utf-8") as file:
                    token = file.read().strip()
            except OSError as exc:
                raise VaultUnavailable(
                    f"{self.connector} pool: cannot read the Vault token file ({type(exc).__name__})"
                ) from None
            if not token:
                raise VaultUnavailable(f"{self.connector} pool: the Vault token file is empty")
            return self._client(token), time.monotonic() + _EXPIRY_MARGIN + self._approle.reread_every
        client = self._client()
        auth = client.auth.approle.login(
            role_id=self._approle.role_id, secret_id=self._approle.secret_id, use_token=True
        )["auth"]
        return client, time.monotonic() + float(auth["lease_duration"])

    async def _pool_token_client(self) -> hvac.Client:
        if self._pool_client is None or time.monotonic() > self._pool_expires_at - _EXPIRY_MARGIN:
            self._pool_client, self._pool_expires_at = await self._run(
                f"{self.connector} pool login", self._login
            )
        return self._pool_client

    def _mint(self, pool: hvac.Client, tenant_id: str) -> _CachedToken:
        response = pool.auth.token.create(
            role_name=layout.token_role_name(self.connector),
            policies=[layout.tenant_policy_name(tenant_id, self.connector)],
            ttl=f"{self._token_ttl}s",
            no_default_policy=True,
        )
        auth = response["auth"]
        return _CachedToken(token=auth["client_token"], expires_at=time.monotonic() + float(auth["lease_duration"]))

    async def tenant_client(self, tenant_id: str) -> hvac.Client:
        """A client holding a short-lived token scoped to one tenant's secret (cached).

        Concurrent callers for the same tenant share one mint.

        Raises:
            VaultForbidden: the pool may not mint a token for that policy.
            VaultUnavailable: Vault cannot be reached.
        """
        layout.tenant_policy_name(tenant_id, self.connector)  # validates the id
        cached = self._tokens.get(tenant_id)
        if cached is not None and time.monotonic() < cached.expires_at - _EXPIRY_MARGIN:
            return self._client(cached.token)
        pending = self._minting.get(tenant_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._minting[tenant_id] = pending
            try:
                pool = await self._pool_token_client()
                try:
                    token = await self._run(
                        f"mint token {tenant_id}/{self.connector}", self._mint, pool, tenant_id
                    )
                except VaultForbidden:
                    # The cached pool token may be dead (Vault restarted): log in again once.
                    self._pool_client = None
                    pool = await self._pool_token_client()
                    token = await self._run(
                        f"mint token {tenant_id}/{self.connector}", self._mint, pool, tenant_id
                    )
            except BaseException as exc:
                # The minter's own cancellation is not the others': they see an
                # interrupted mint, which is retried like an unreachable Vault.
                shared = (
                    VaultUnavailable(f"mint token {tenant_id}/{self.connector}: interrupted")
                    if isinstance(exc, asyncio.CancelledError)
                    else exc
                )
                pending.set_exception(shared)
                pending.exception()  # mark retrieved when nobody else waits
                del pending, shared  # they hold the exception, whose traceback holds this frame
                raise
            finally:
                self._minting.pop(tenant_id, None)
            self._remember(tenant_id, token)
            pending.set_result(token)
            return self._client(token.token)
        try:
            return self._client((await asyncio.shield(pending)).token)
        finally:
            del pending  # no cycle through a failed mint's traceback (Credentials.get)

    def _remember(self, tenant_id: str, token: _CachedToken) -> None:
        if len(self._tokens) >= self._max_cached:
            now = time.monotonic()
            for key in [k for k, v in self._tokens.items() if v.expires_at - _EXPIRY_MARGIN <= now]:
                del self._tokens[key]
            while len(self._tokens) >= self._max_cached:
                del self._tokens[next(iter(self._tokens))]
        self._tokens[tenant_id] = token

    def forget(self, tenant_id: str) -> None:
        self._tokens.pop(tenant_id, None)

    def close(self) -> None:
        super().close()
        self._session.close()

    @property
    def cached_tokens(self) -> int:
        return len(self._tokens)

    async def read(self, tenant_id: str, *, as_tenant: str | None = None) -> TenantSecret:
        """Read ``tenant_id``'s secret using the token minted for ``as_tenant`` (default: same).

        ``as_tenant`` exists so tests can prove a tenant-A token is refused tenant B's secret.

        Raises:
            CredentialsMissing: nothing stored for the tenant and connector.
            VaultForbidden: the token's policy does not cover that secret.
        """
        path = layout.secret_path(tenant_id, self.connector)
        for attempt in (1, 2):
            client = await self.tenant_client(as_tenant or tenant_id)

            def read(client: hvac.Client = client) -> TenantSecret:
                response = client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.mount, raise_on_deleted_version=True
                )
                return TenantSecret(
                    data=response["data"]["data"], version=int(response["data"]["metadata"]["version"])
                )

            try:
                return await self._run(f"read credentials {tenant_id}/{self.connector}", read)
            except VaultForbidden:
                if attempt == 2:
                    raise
                # A cached token can be dead (revoked, or Vault restarted and forgot it):
                # mint the tenant's anew (logging in again if the pool token is dead too)
                # and retry once. A real denial comes back the same the second time.
                self._drop_cached(as_tenant or tenant_id)
        raise AssertionError("unreachable")

    def _drop_cached(self, tenant_id: str) -> None:
        # Only the tenant's token: a dead pool token shows when the next mint is refused,
        # and tenant_client logs in again then. Dropping it here made every read of a
        # tenant without a policy (never given credentials) cost an AppRole login.
        self._tokens.pop(tenant_id, None)

    async def write_cas(self, tenant_id: str, data: Mapping[str, Any], version: int) -> int:
        """Write back (e.g. a refreshed OAuth token) only if the secret is still at ``version``.

        Raises:
            CasConflict: another writer updated the secret first.
            VaultForbidden: the token's policy does not cover that secret.
        """
        path = layout.secret_path(tenant_id, self.connector)
        for attempt in (1, 2):
            client = await self.tenant_client(tenant_id)

            def write(client: hvac.Client = client) -> int:
                response = client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=dict(data), cas=version, mount_point=self.mount
                )
                return int(response["data"]["version"])

            try:
                return await self._run(f"write credentials {tenant_id}/{self.connector}", write)
            except VaultForbidden:
                if attempt == 2:
                    raise
                self._drop_cached(tenant_id)  # a dead cached token, as in read()
        raise AssertionError("unreachable")

    async def read_other_connector_path(self, tenant_id: str, connector: str) -> TenantSecret:
        """Try to read another connector's secret with the pool token itself (tests prove 403)."""
        pool = await self._pool_token_client()
        path = layout.secret_path(tenant_id, connector)

        def read() -> TenantSecret:
            response = pool.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount, raise_on_deleted_version=True
            )
            return TenantSecret(data=response["data"]["data"], version=0)

        return await self._run(f"pool read {tenant_id}/{connector}", read)
