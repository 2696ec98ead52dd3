"""Slack: ``chat.postMessage`` with a bot token.

Slack answers most failures with HTTP 200 and ``{"ok": false, "error": "<code>"}``;
:func:`slack_error` (:mod:`._slack_api`) maps those codes onto our retry decision. Rate
limits arrive as HTTP 429 with ``Retry-After`` (and, rarely, as ``ok: false``
``ratelimited``).

Side effects: ``chat.postMessage`` takes no idempotency key. Each message carries ours
in its metadata instead, and before posting again after an attempt whose outcome is
unknown (a timeout, a worker killed or stalled with the call in flight) the runtime asks
:meth:`SlackConnector.find_done`, which reads the channel back for it
(:mod:`workers.connectors._slack_lookup`). We also send ``Idempotency-Key`` (Slack
ignores it) so the emulator can count effects per key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._args import credential, validated
from ._base import Connector, ConnectorCall, Doubt, Operation, maybe, output_schema
from ._http import send
from ._slack_api import slack_data, slack_error
from ._slack_lookup import SlackLookup, marker, message_output

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

POSTED_SCHEMA = output_schema(
    {
        "channel": maybe("string", "The channel's ID the message went to."),
        "ts": maybe("string", "The message's timestamp, its ID in the channel."),
        "thread_ts": {"type": "string", "description": "The parent's ts of a thread reply."},
    },
    "channel",
    "ts",
)


class SlackConnector(Connector):
    name: ClassVar[str] = "slack"
    credential_shapes: ClassVar[tuple[frozenset[str], ...]] = (frozenset({"bot_token"}), frozenset({"token"}))
    default_base_url: ClassVar[str] = "https://slack.com"
    operations: ClassVar[dict[str, Operation]] = {
        "chat.postMessage": Operation(
            description="Post a message to a Slack channel or thread.",
            input_schema=POST_MESSAGE_SCHEMA,
            output_schema=POSTED_SCHEMA,
            destructive=False,  # it creates; nothing already there changes
        )
    }
    finds_done: ClassVar[bool] = True

    def __init__(self) -> None:
        self.lookup = SlackLookup()

    @property
    def reads(self) -> int:
        """Upstream read requests ``find_done`` made (for tests and the curious)."""
        return self.lookup.reads

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        """The ``{channel, ts}`` of a message an earlier attempt posted, or None."""
        args = validated(self, call)
        token = credential(call, "bot_token", "token", connector=self.name)
        return await self.lookup.find(call, token, args, doubt)

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
        body["metadata"] = marker(call.idempotency_key)
        reply = await send(
            call,
            "POST",
            f"{call.base_url.rstrip('/')}/api/chat.postMessage",
            what=what,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            json_body=body,
        )
        data = slack_data(reply, what)
        message = data.get("message")
        thread_ts = message.get("thread_ts") if isinstance(message, dict) else None
        return message_output(data.get("channel"), data.get("ts"), thread_ts)
