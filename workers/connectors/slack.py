"""Slack: ``chat.postMessage`` with a bot token.

Slack answers most failures with HTTP 200 and ``{"ok": false, "error": "<code>"}``;
:func:`slack_error` maps those codes onto our retry decision. Rate limits arrive as
HTTP 429 with ``Retry-After`` (and, rarely, as ``ok: false`` ``ratelimited``).

Side effects: ``chat.postMessage`` takes no idempotency key, so a retry after an
ambiguous failure (timeout, worker killed after the call) may post twice. We still send
``Idempotency-Key`` (Slack ignores it) so the emulator can count effects per key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from core.errors import CommandError, PermanentError, RetryableError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import Connector, ConnectorCall, CredentialsExpired, Operation, parse_retry_after
from ._http import raise_for_status, send

__all__ = ["SlackConnector", "slack_error"]

POST_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "channel": {
            "type": "string",
            "minLength": 1,
            "maxLength": 80,
            "description": "Channel ID (C0123ABCD) or name (#general).",
        },
        "text": {"type": "string", "maxLength": 40_000, "description": "Message text (mrkdwn)."},
        "blocks": {
            "type": "array",
            "maxItems": 50,
            "items": {"type": "object"},
            "description": "Block Kit blocks; text becomes the notification fallback.",
        },
        "thread_ts": {
            "type": "string",
            "pattern": r"^[0-9]+\.[0-9]+$",
            "description": "Reply in the thread of this parent message.",
        },
    },
    "required": ["channel"],
    "anyOf": [{"required": ["text"]}, {"required": ["blocks"]}],
    "additionalProperties": False,
}

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


class SlackConnector(Connector):
    name: ClassVar[str] = "slack"
    default_base_url: ClassVar[str] = "https://slack.com"
    operations: ClassVar[dict[str, Operation]] = {
        "chat.postMessage": Operation(
            description="Post a message to a Slack channel or thread.",
            input_schema=POST_MESSAGE_SCHEMA,
        )
    }

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Post the message; returns ``{channel, ts, thread_ts?}``.

        Raises:
            CredentialsExpired: 401 or an auth error code.
            RetryableError: rate limits, 5xx, Slack transient codes, timeouts.
            PermanentError: any other refusal, bad arguments, missing token.
        """
        args = validated(self, call)
        what = "slack chat.postMessage"
        token = credential(call, "bot_token", "token", connector=self.name)
        body = {key: args[key] for key in ("channel", "text", "blocks", "thread_ts") if key in args}
        reply = await send(
            call,
            "POST",
            f"{call.base_url.rstrip('/')}/api/chat.postMessage",
            what=what,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            json_body=body,
        )
        raise_for_status(reply, what)
        data = reply.json(what)
        if not isinstance(data, dict):
            raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: unexpected response")
        if not data.get("ok"):
            retry_after = parse_retry_after(reply.headers.get("Retry-After"))
            raise slack_error(str(data.get("error", "")), what=what, retry_after=retry_after)
        output: dict[str, Any] = {"channel": data.get("channel"), "ts": data.get("ts")}
        message = data.get("message")
        if isinstance(message, dict) and message.get("thread_ts"):
            output["thread_ts"] = message["thread_ts"]
        return output
