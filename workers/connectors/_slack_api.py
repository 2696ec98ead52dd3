"""Slack Web API answers: most failures come as HTTP 200 with ``{"ok": false, "error":
"<code>"}``; :func:`slack_error` maps those codes onto our retry decision and
:func:`slack_data` checks a whole reply."""

from __future__ import annotations

from typing import Any

from core.errors import CommandError, PermanentError, RetryableError
from schemas import ErrorCode

from ._base import CredentialsExpired, parse_retry_after
from ._http import Reply, raise_for_status

__all__ = ["slack_data", "slack_error"]

# Codes meaning the token itself is bad: refreshable for rotating tokens, else fatal.
_AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_expired", "token_revoked", "account_inactive"}
)
_RATE_ERRORS = frozenset({"ratelimited", "rate_limited"})
# Slack's own transient failures ("it's possible some aspect of the operation succeeded").
_TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"}
)
_FORBIDDEN_ERRORS = frozenset({"missing_scope", "not_allowed_token_type", "no_permission"})


def slack_error(code: str, *, what: str, retry_after: float | None = None) -> CommandError:
    """Our error for Slack's ``{"ok": false, "error": code}``."""
    safe = "".join(ch for ch in code[:64] if ch.isalnum() or ch == "_") or "unknown_error"
    if safe in _AUTH_ERRORS:
        return CredentialsExpired(f"{what}: {safe}")
    if safe in _RATE_ERRORS:
        return RetryableError(
            ErrorCode.UPSTREAM_RATE_LIMITED, f"{what}: {safe}", retry_after=retry_after
        )
    if safe in _TRANSIENT_ERRORS:
        return RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: {safe}")
    if safe in _FORBIDDEN_ERRORS:
        return PermanentError(ErrorCode.CREDENTIALS_INVALID, f"{what}: {safe}")
    return PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: {safe}")


def slack_data(reply: Reply, what: str) -> dict[str, Any]:
    """The body of a successful Slack reply.

    Raises:
        CredentialsExpired, RetryableError, PermanentError: the HTTP status or the
            ``ok: false`` code says the call failed (see :func:`slack_error`).
    """
    raise_for_status(reply, what)
    data = reply.json(what)
    if not isinstance(data, dict):
        raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: unexpected response")
    if not data.get("ok"):
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        raise slack_error(str(data.get("error", "")), what=what, retry_after=retry_after)
    return data
