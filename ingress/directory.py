"""The directory: API keys and workspaces, materialised from the compacted config topic.

Every replica reads the whole config topic (no consumer group) from the beginning and
keeps following it, so memory is bounded by what the compacted topic holds. It serves
:class:`ingress.contracts.Authenticator` and :class:`ingress.contracts.Catalog`.

Verification cache and revocation: scrypt is slow by design, so a successful check is
remembered (bounded LRU keyed by a SHA-256 of the presented key). A cache entry only
says "this secret matched hash H", which stays true while the key's hash is H: it holds
until the key's hash changes or the LRU lets it go, with no expiry of its own. Every
request still reads the key's *current* record, so a revocation (a tombstone or
``revoked: true`` on the config topic) takes effect on a replica as soon as its follower
reads that record, normally well under a second. Failed checks are cached for
``cache_ttl`` seconds (apart, so a flood of wrong secrets cannot push the good verdicts
out), so repeating a wrong secret cannot make a replica burn CPU on scrypt.

One key's checks run one at a time, and at most ``_CHECKS_PER_KEY`` of them run or wait
(more are refused with 429): wrong secrets sent in a flood for one key id queue behind each
other, not in front of every other tenant's first request, and a secret this replica
has verified passes without a check, so such a flood cannot lock out the key's holder
(only a first use of the key on this replica during the flood waits its turn, or 429).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from pydantic import ValidationError

from core.follow import Following, TopicFollower
from core.settings import Settings
from core.workspaces import WorkspaceStore
from schemas import ApiKeyRecord, WorkspaceConfig

from ._bounded import LRU
from .contracts import Identity
from .errors import BadRequest, Forbidden, RateLimited, Unauthorized
from .keys import parse_api_key, verify_secret

__all__ = ["Directory"]

logger = logging.getLogger(__name__)

_API_KEY = "api_key:"
# Checks of one key id running or waiting (distinct secrets: one bearer shares one check).
_CHECKS_PER_KEY = 8
_WORKSPACE = "workspace:"


class Directory(Following):
    """API keys and workspace configurations as last seen on the config topic."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache_ttl: float = 60.0,
        cache_size: int = 10_000,
    ) -> None:
        self.settings = settings
        self._keys: dict[str, ApiKeyRecord] = {}
        # As JSON, parsed when asked for (core.workspaces): every workspace is held here.
        self._workspaces = WorkspaceStore()
        self._cache_ttl = cache_ttl
        # sha256(presented key) -> (secret_hash it matched or "" for a failed check, when)
        self._verified: LRU[bytes, tuple[str, float]] = LRU(cache_size)
        self._failed: LRU[bytes, tuple[str, float]] = LRU(max(1, cache_size // 10))
        # scrypt takes 16 MiB and tens of ms: few at a time, off the event loop.
        self._scrypt_slots = asyncio.Semaphore(4)
        # Concurrent first requests with one key share a single scrypt run.
        self._checking: dict[bytes, asyncio.Future[bool]] = {}
        # Per key id: its checks in flight, which take their turns one at a time.
        self._key_checks: dict[str, int] = {}
        self._key_turns: dict[str, asyncio.Lock] = {}
        self.follower = TopicFollower(
            settings, settings.topics.config, self.apply, start_at="beginning", name="directory"
        )

    @property
    def ready(self) -> asyncio.Event:
        """Set once the directory has read the config topic up to its end at start."""
        return self.follower.caught_up

    # -- materialisation -------------------------------------------------------------

    def apply(self, record: Any) -> None:
        """Apply one config-topic record (a tombstone deletes)."""
        key = record.key.decode("utf-8", "replace") if record.key else ""
        value = record.value
        try:
            if key.startswith(_API_KEY):
                key_id = key[len(_API_KEY) :]
                if value is None:
                    self._keys.pop(key_id, None)
                else:
                    self._keys[key_id] = ApiKeyRecord.from_bytes(value)
            elif key.startswith(_WORKSPACE):
                _, tenant_id, space_id = key.split(":", 2)
                if value is None:
                    self._workspaces.pop((tenant_id, space_id))
                else:
                    self._workspaces.put((tenant_id, space_id), value, WorkspaceConfig.from_bytes(value))
        except (ValidationError, ValueError) as exc:
            logger.warning(
                "ignored an invalid config record",
                extra={"fields": {"config_key": key[:200], "error": type(exc).__name__}},
            )

    # -- Catalog -----------------------------------------------------------------------

    def workspace(self, tenant_id: str, space_id: str) -> WorkspaceConfig | None:
        return self._workspaces.get((tenant_id, space_id))

    def workspace_record(self, tenant_id: str, space_id: str) -> bytes | None:
        """A workspace's record as stored on the config topic (its bytes), for ETags."""
        return self._workspaces.raw((tenant_id, space_id))

    def spaces_of(self, tenant_id: str) -> list[str]:
        """A tenant's workspaces, for the admin API."""
        return self._workspaces.spaces_of(tenant_id)

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The stored record of a key (hash only), for the admin API."""
        return self._keys.get(key_id)

    def api_keys_of(self, tenant_id: str) -> list[ApiKeyRecord]:
        """A tenant's keys (records, hash only), oldest first, for the admin API."""
        return sorted((r for r in self._keys.values() if r.tenant_id == tenant_id), key=lambda r: r.created_at)

    # -- Authenticator -----------------------------------------------------------------

    def authenticate(self, bearer: str | None, space_id: str | None) -> Identity:
        """Resolve a bearer key and the requested workspace (blocking scrypt on a miss).

        Prefer :meth:`authenticate_async` on the event loop: it runs scrypt in a thread.

        Raises:
            Unauthorized: missing, malformed, unknown, revoked or wrong key.
            Forbidden: the key does not own ``space_id``.
            BadRequest: no workspace given and the key owns several.
        """
        record, digest, verdict = self._lookup(bearer)
        if verdict is None:
            verdict = verify_secret(self._secret(bearer), record)
            self._remember(digest, record, verdict)
        return self._identity(record, verdict, space_id)

    async def authenticate_async(self, bearer: str | None, space_id: str | None) -> Identity:
        """Like :meth:`authenticate`, with scrypt off the event loop.

        Raises:
            Unauthorized: missing, malformed, unknown, revoked or wrong key.
            Forbidden: the key does not own ``space_id``.
            BadRequest: no workspace given and the key owns several.
        """
        record, digest, verdict = self._lookup(bearer)
        if verdict is None:
            running = self._checking.get(digest)
            if running is None:
                key_id = record.key_id
                checks = self._key_checks.get(key_id, 0)
                if checks >= _CHECKS_PER_KEY:
                    raise RateLimited("too many checks of this API key at once; retry shortly", retry_after=1.0)
                self._key_checks[key_id] = checks + 1
                # Its own task: a caller that goes away (a client disconnect cancels its
                # handler) must not cancel the check the others are waiting for.
                running = asyncio.ensure_future(self._check(bearer, record, digest))
                self._checking[digest] = running
                running.add_done_callback(lambda done: self._checked(digest, key_id, done))
            verdict = await asyncio.shield(running)
        return self._identity(record, verdict, space_id)

    async def _check(self, bearer: str | None, record: ApiKeyRecord, digest: bytes) -> bool:
        async with self._key_turns.setdefault(record.key_id, asyncio.Lock()), self._scrypt_slots:
            verdict = await asyncio.to_thread(verify_secret, self._secret(bearer), record)
        self._remember(digest, record, verdict)
        return verdict

    def _checked(self, digest: bytes, key_id: str, done: asyncio.Future[bool]) -> None:
        checks = self._key_checks.get(key_id, 1) - 1
        if checks > 0:
            self._key_checks[key_id] = checks
        else:
            self._key_checks.pop(key_id, None)
            self._key_turns.pop(key_id, None)
        if self._checking.get(digest) is done:
            del self._checking[digest]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    @staticmethod
    def _secret(bearer: str | None) -> str:
        parsed = parse_api_key(bearer or "")
        assert parsed is not None  # _lookup already parsed it
        return parsed.secret

    def _lookup(self, bearer: str | None) -> tuple[ApiKeyRecord, bytes, bool | None]:
        if not bearer:
            raise Unauthorized("an API key is required (Authorization: Bearer sy_...)")
        parsed = parse_api_key(bearer)
        if parsed is None:
            raise Unauthorized("invalid API key")
        record = self._keys.get(parsed.key_id)
        if record is None or record.revoked:
            raise Unauthorized("invalid API key")
        digest = hashlib.sha256(bearer.encode()).digest()
        now = time.monotonic()
        # A good verdict holds only for the hash it was computed against (a key whose
        # hash changed falls through to a failed verdict of the same secret, if any).
        good = self._verified.get(digest)
        if good is not None and good[0] == record.secret_hash:
            return record, digest, True
        bad = self._failed.get(digest)
        if bad is not None and now - bad[1] < self._cache_ttl:
            return record, digest, False
        return record, digest, None

    def _remember(self, digest: bytes, record: ApiKeyRecord, verdict: bool) -> None:
        if verdict:
            self._verified.put(digest, (record.secret_hash, time.monotonic()))
        else:
            self._failed.put(digest, ("", time.monotonic()))

    @staticmethod
    def _identity(record: ApiKeyRecord, verdict: bool, space_id: str | None) -> Identity:
        if not verdict:
            raise Unauthorized("invalid API key")
        if space_id is None:
            if len(record.spaces) != 1:
                raise BadRequest(
                    "this key has several workspaces: choose one with the X-Switchyard-Space "
                    "header or in the path (REST: /v1/spaces/{space_id}/..., MCP: /mcp/{space_id})"
                )
            space_id = record.spaces[0]
        elif space_id not in record.spaces:
            raise Forbidden("this API key does not grant access to that workspace")
        return Identity(
            tenant_id=record.tenant_id,
            space_id=space_id,
            user_id=record.user_id,
            role=record.role,
            key_id=record.key_id,
        )
