"""Stateless MCP session ids: an HMAC-signed token any ingress replica can check.

The handshake revisions (2025-03-26, 2025-06-18, 2025-11-25) give a session id at
``initialize``.
Switchyard keeps no per-session state (tool calls are Kafka commands, results come from
the results topic), so the id only binds what the handshake decided: the tenant, the
workspace, the negotiated protocol version and when it was issued. It is signed with a
per-deployment key, so every replica that shares the key accepts the id and no sticky
load balancing is needed. A token of another tenant or workspace, a bad signature or an
expired token all read as "no such session" (HTTP 404), as the spec prescribes for a
session the server does not know; the client then starts a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

__all__ = ["SessionClaims", "SessionSigner", "derive_session_key"]

_PREFIX = "sy1"
_CONTEXT = b"switchyard/mcp-session/v1"


def derive_session_key(material: str | bytes | None) -> tuple[bytes, bool]:
    """The signing key from deployment secret material, or a random one.

    Returns ``(key, shared)``: ``shared`` is False for a random per-process key, which
    only that replica can validate (a session then breaks when a load balancer moves
    the client to another replica).
    """
    if material is None or material == "" or material == b"":
        return secrets.token_bytes(32), False
    raw = material.encode() if isinstance(material, str) else material
    # A dedicated derivation, so the admin token itself is never used as an HMAC key
    # and a leaked session key reveals nothing about it.
    return hmac.new(raw, _CONTEXT, hashlib.sha256).digest(), True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionClaims:
    tenant_id: str
    space_id: str
    protocol_version: str
    issued_at: int


class SessionSigner:
    """Issues and checks session ids ``sy1.<payload>.<mac>`` (visible ASCII only)."""

    def __init__(
        self,
        key: bytes,
        *,
        max_age: float = 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._max_age = max_age
        self._clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, tenant_id: str, space_id: str, protocol_version: str) -> str:
        """A new session id for a successful ``initialize``."""
        # The nonce keeps two handshakes in the same second apart (logs, metrics).
        payload = orjson.dumps(
            [tenant_id, space_id, protocol_version, int(self._clock()), secrets.token_hex(6)]
        )
        return f"{_PREFIX}.{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, tenant_id: str, space_id: str) -> SessionClaims | None:
        """The claims of ``token`` if it is genuine, fresh and belongs to this caller."""
        if len(token) > 512:
            return None
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            return None
        try:
            payload = _unb64(parts[1])
            mac = _unb64(parts[2])
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            tenant, space, version, issued_at, _nonce = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
        if not isinstance(issued_at, int) or not isinstance(version, str):
            return None
        if self._clock() - issued_at > self._max_age:
            return None
        # Another tenant's (or workspace's) genuine session reads as unknown: it must not
        # even confirm that the id exists.
        if tenant != tenant_id or space != space_id:
            return None
        return SessionClaims(tenant, space, version, issued_at)
