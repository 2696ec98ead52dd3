"""OAuth 2.0 access-token refresh (RFC 6749 §6, ``grant_type=refresh_token``).

The runtime calls :func:`refresh` when a connector raised :class:`CredentialsExpired`
(or :func:`expired` says so up front), writes the returned credentials back to Vault
with check-and-set, and retries the call once. Credentials shape::

    {access_token, refresh_token, client_id, client_secret, token_url?, expires_at?}

``expires_at`` is Unix seconds. Client authentication uses ``client_secret_post``
(client id and secret in the body), which Google and most providers accept. The body is
a form (RFC 6749), or JSON for a provider that documents that (Atlassian).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode

from ._base import Connector, classify_http
from ._http import request

__all__ = ["expired", "refresh", "token_url_for"]

# OAuth error codes (RFC 6749 §5.2) that mean the grant or the client is dead:
# retrying cannot help, a person must reconnect the account.
_DEAD_GRANT = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


def expired(
    credentials: Mapping[str, Any], *, now: float | None = None, leeway: float = 30.0
) -> bool:
    """Whether the access token is past (or within ``leeway`` of) its ``expires_at``."""
    expires_at = credentials.get("expires_at")
    if not isinstance(expires_at, int | float):
        return False
    return expires_at - leeway <= (time.time() if now is None else now)


def token_url_for(connector: type[Connector], base_url: str, credentials: Mapping[str, Any]) -> str:
    """Where to refresh: the emulator's endpoint when the base URL is overridden.

    Raises:
        PermanentError: CREDENTIALS_INVALID when no token endpoint is known.
    """
    default_base = connector.default_base_url.rstrip("/")
    if base_url.rstrip("/") != default_base:
        return f"{base_url.rstrip('/')}/oauth/token"
    stored = credentials.get("token_url")
    if isinstance(stored, str) and stored.startswith("https://"):
        return stored
    default = getattr(connector, "default_token_url", None)
    if isinstance(default, str) and default:
        return default
    raise PermanentError(
        ErrorCode.CREDENTIALS_INVALID, f"{connector.name}: no OAuth token endpoint"
    )


def _field(credentials: Mapping[str, Any], name: str) -> str:
    value = credentials.get(name)
    if not isinstance(value, str) or not value:
        raise PermanentError(
            ErrorCode.CREDENTIALS_MISSING, f"oauth refresh: credentials lack {name}"
        )
    return value


async def refresh(
    session: aiohttp.ClientSession,
    token_url: str,
    credentials: Mapping[str, Any],
    *,
    request_timeout: float = 10.0,
    now: float | None = None,
    json_body: bool = False,
) -> dict[str, Any]:
    """Exchange the refresh token for a new access token.

    Returns the credentials with ``access_token`` and ``expires_at`` replaced (and
    ``refresh_token`` too when the provider rotates it); other fields are kept.

    Raises:
        PermanentError: CREDENTIALS_MISSING when a field is absent; CREDENTIALS_INVALID
            when the provider refuses the grant or the client (reconnect needed).
        RetryableError: 429/5xx from the token endpoint, timeouts, connection errors.
    """
    what = "oauth refresh"
    form = {
        "grant_type": "refresh_token",
        "refresh_token": _field(credentials, "refresh_token"),
        "client_id": _field(credentials, "client_id"),
        "client_secret": _field(credentials, "client_secret"),
    }
    reply = await request(
        session,
        "POST",
        token_url,
        what=what,
        request_timeout=request_timeout,
        headers={"Accept": "application/json"},
        json_body=form if json_body else None,
        data=None if json_body else form,  # aiohttp sends a dict as a urlencoded form
        limit=64 * 1024,
    )
    if reply.status >= 500 or reply.status in (408, 429):
        raise classify_http(reply.status, retry_after=reply.headers.get("Retry-After"), what=what)
    try:
        data = reply.json(what)
    except RetryableError:
        if reply.status >= 400:
            raise PermanentError(
                ErrorCode.CREDENTIALS_INVALID,
                f"{what}: {reply.status} refused",
                http_status=reply.status,
            ) from None
        raise
    if reply.status >= 400 or not isinstance(data, dict) or "access_token" not in data:
        code = data.get("error") if isinstance(data, dict) else None
        # Only the RFC 6749 error code is shown: error_description is free text.
        safe = code if isinstance(code, str) and code.replace("_", "").isalnum() else "refused"
        kind = ErrorCode.CREDENTIALS_INVALID
        if reply.status < 400 or (safe not in _DEAD_GRANT and reply.status not in (400, 401)):
            kind = ErrorCode.UPSTREAM_REJECTED
        raise PermanentError(
            kind, f"{what}: {safe[:64]}", http_status=reply.status if reply.status >= 400 else None
        )
    renewed = dict(credentials)
    renewed["access_token"] = str(data["access_token"])
    if isinstance(data.get("refresh_token"), str) and data["refresh_token"]:
        renewed["refresh_token"] = data["refresh_token"]
    lifetime = data.get("expires_in")
    if isinstance(lifetime, int | float) and not isinstance(lifetime, bool):
        renewed["expires_at"] = int((time.time() if now is None else now) + lifetime)
    else:
        renewed.pop("expires_at", None)
    return renewed
