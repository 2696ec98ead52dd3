"""What the Slack emulator remembers of posted messages, for its read methods.

``conversations.history`` (top-level messages, newest first), ``conversations.replies``
(a thread, parent first) and ``conversations.list`` (the channels a tenant posted to,
and with ``types=im`` the direct message channels of the users it posted to) read it,
with Slack's cursor pagination. Everything is bounded: messages per channel, channels
overall (the least recently posted-to are forgotten first).
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

__all__ = ["SlackHistory", "slack_read", "valid_metadata"]

MESSAGES_PER_CHANNEL = 1_000
MAX_CHANNELS = 2_000


class SlackHistory:
    def __init__(
        self, *, per_channel: int = MESSAGES_PER_CHANNEL, max_channels: int = MAX_CHANNELS
    ) -> None:
        self._per_channel = per_channel
        self._max_channels = max_channels
        # (tenant, channel id) -> its messages, oldest first; and the channel's name.
        self._messages: OrderedDict[tuple[str, str], deque[dict[str, Any]]] = OrderedDict()
        self._names: dict[tuple[str, str], str] = {}
        # A direct message channel's user (a post to a user ID lands in the DM with them).
        self._users: dict[tuple[str, str], str] = {}

    def post(
        self, tenant: str, channel_id: str, name: str | None, message: dict[str, Any], *, user: str | None = None
    ) -> None:
        key = (tenant, channel_id)
        messages = self._messages.get(key)
        if messages is None:
            messages = self._messages[key] = deque(maxlen=self._per_channel)
            if len(self._messages) > self._max_channels:
                old, _ = self._messages.popitem(last=False)
                self._names.pop(old, None)
                self._users.pop(old, None)
        else:
            self._messages.move_to_end(key)
        if name:
            self._names[key] = name
        if user:
            self._users[key] = user
        messages.append(message)

    def known(self, tenant: str, channel_id: str) -> bool:
        return (tenant, channel_id) in self._messages

    def history(
        self, tenant: str, channel_id: str, *, oldest: float, start: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Top-level messages newer than ``oldest``, newest first, from position ``start``;
        and the position of the next page (None: no more)."""
        newest_first = [
            m
            for m in reversed(self._messages.get((tenant, channel_id), ()))
            if float(m["ts"]) > oldest and m.get("thread_ts", m["ts"]) == m["ts"]
        ]
        return _page(newest_first, start, limit)

    def replies(
        self, tenant: str, channel_id: str, thread_ts: str, *, start: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None] | None:
        """The thread's parent and replies, oldest first (None: no such thread)."""
        thread = [
            m
            for m in self._messages.get((tenant, channel_id), ())
            if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
        ]
        if not thread:
            return None
        return _page(thread, start, limit)

    def channels(
        self, tenant: str, *, start: int, limit: int, ims: bool = False, channels: bool = True
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The tenant's channels and (with ``ims``) direct message channels, as
        ``conversations.list`` describes them."""
        listed: list[dict[str, Any]] = []
        for owner, channel_id in self._messages:
            if owner != tenant:
                continue
            user = self._users.get((owner, channel_id))
            if user is not None and ims:
                listed.append({"id": channel_id, "user": user, "is_im": True})
            elif user is None and channels:
                name = self._names.get((owner, channel_id), channel_id.lower())
                listed.append({"id": channel_id, "name": name, "is_channel": True, "is_archived": False,
                               "is_member": True})  # fmt: skip
        return _page(listed, start, limit)

    def clear(self) -> None:
        self._messages.clear()
        self._names.clear()
        self._users.clear()


def _page(items: list[dict[str, Any]], start: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    end = start + limit
    return items[start:end], (end if end < len(items) else None)


def valid_metadata(metadata: Any) -> bool:
    """Slack's message ``metadata``: ``{event_type: str, event_payload: object}``."""
    return (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and 0 < len(metadata["event_type"]) <= 255
        and isinstance(metadata.get("event_payload"), dict)
    )


def slack_read(history: SlackHistory, tenant: str, method: str, params: Mapping[str, Any]) -> web.Response:
    """``conversations.history``, ``conversations.replies`` or ``conversations.list``."""
    try:
        start = _cursor(params.get("cursor"))
        limit = _number(params.get("limit"), default=100, low=1, high=999)
        oldest = float(params.get("oldest") or 0)
    except ValueError:
        return _answer({"ok": False, "error": "invalid_arguments"})
    if method == "conversations.list":
        types = set(str(params.get("types") or "public_channel").split(","))
        channels, following = history.channels(
            tenant, ims="im" in types, channels=bool(types & {"public_channel", "private_channel"}),
            start=start, limit=limit,
        )  # fmt: skip
        return _answer({"ok": True, "channels": channels}, following)
    channel = str(params.get("channel") or "")
    if not history.known(tenant, channel):  # an ID the tenant posted to; names are refused
        return _answer({"ok": False, "error": "channel_not_found"})
    with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
    if method == "conversations.history":
        messages, following = history.history(tenant, channel, oldest=oldest, start=start, limit=limit)
    elif method == "conversations.replies":
        thread = history.replies(tenant, channel, str(params.get("ts") or ""), start=start, limit=limit)
        if thread is None:
            return _answer({"ok": False, "error": "thread_not_found"})
        messages, following = thread
    else:
        return _answer({"ok": False, "error": "unknown_method"}, status=404)
    if not with_metadata:
        messages = [{k: v for k, v in m.items() if k != "metadata"} for m in messages]
    return _answer({"ok": True, "messages": messages, "has_more": following is not None}, following)


def _answer(payload: dict[str, Any], following: int | None = None, status: int = 200) -> web.Response:
    if payload.get("ok"):
        cursor = base64.b64encode(f"next:{following}".encode()).decode() if following else ""
        payload["response_metadata"] = {"next_cursor": cursor}
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _cursor(value: Any) -> int:
    if not value:
        return 0
    try:
        text = base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("bad cursor") from exc
    prefix, _, number = text.partition(":")
    if prefix != "next" or not number.isdigit():
        raise ValueError("bad cursor")
    return int(number)


def _number(value: Any, *, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    return max(low, min(high, int(value)))
