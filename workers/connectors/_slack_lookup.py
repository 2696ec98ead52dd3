"""Finding, in Slack itself, a message an earlier attempt of a command already posted.

``chat.postMessage`` takes no idempotency key, so each message we post carries one in
its metadata (``event_type`` :data:`EVENT_TYPE`, ``event_payload.idempotency_key``).
When an earlier attempt may have posted (a timeout after the request was sent, a worker
that died or stalled with the call in flight), the worker asks :meth:`SlackLookup.find`
before posting again: it reads the channel (``conversations.history``, or the thread with
``conversations.replies``) back to the command's submission, with metadata, and answers
with the message's ``{channel, ts}`` when one carries the key.

Reads are few and shared (:mod:`._shared_reads`): one read of a channel answers every
key in it. Channel names resolve to IDs through ``conversations.list`` (history takes
IDs only), read the same way, in pages as large as Slack allows and up to
:data:`LIST_MAX_PAGES` of them (a workspace's channels are many more than the messages
of a channel since a submission). A history read stops after :data:`MAX_PAGES` pages: a
channel busier than that since the command was submitted, or a name not among the
first ~10,000 channels, is not fully checked, and the command is posted as before.

Needs the ``channels:history`` / ``groups:history`` and ``channels:read`` /
``groups:read`` scopes (for posts to a user ID, ``im:history`` and ``im:read``: the
direct message channel is found by its user through ``conversations.list``); without
them the check fails and the command is posted as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from yarl import URL

from ._base import ConnectorCall, Doubt
from ._http import send
from ._shared_reads import READ_LIMIT, Found, SharedReads, for_reads, output_for
from ._slack_api import slack_data

__all__ = ["EVENT_TYPE", "SlackLookup", "marker", "message_output"]

EVENT_TYPE = "switchyard_command"
MAX_PAGES = 5
PAGE_SIZE = 200
# conversations.list: Slack's largest page ("under 1000"), and how many of them.
LIST_PAGE_SIZE = 999
LIST_MAX_PAGES = 10


def marker(idempotency_key: str) -> dict[str, Any]:
    """The ``metadata`` of a message we post: what :meth:`SlackLookup.find` looks for."""
    return {"event_type": EVENT_TYPE, "event_payload": {"idempotency_key": idempotency_key}}


def message_output(channel: Any, ts: Any, thread_ts: Any = None) -> dict[str, Any]:
    """A posted message as the command's output: ``{channel, ts, thread_ts?}``."""
    output = {"channel": channel, "ts": ts}
    if thread_ts:
        output["thread_ts"] = thread_ts
    return output


class SlackLookup:
    def __init__(self) -> None:
        self.reads = 0  # upstream read requests made (for tests and the curious)
        self._shared = SharedReads()

    async def find(
        self, call: ConnectorCall, token: str, args: Mapping[str, Any], doubt: Doubt
    ) -> dict[str, Any] | None:
        """The output of the message an earlier attempt posted, or None if none is found.

        Raises:
            RetryableError, PermanentError, CredentialsExpired: a read failed (as the
                post would: rate limits, 5xx, timeouts, refused scopes).
        """
        call = for_reads(call)
        channel = str(args["channel"])
        channel_id: str | None = channel
        if _is_user(channel):
            # Posted to a user ID, a message lands in the app's direct message channel
            # with that user (opened by the first post).
            ims = await self._shared.found(
                ("ims", call.tenant_id), doubt, lambda _: self._list_channels(call, token, ims=True)
            )
            channel_id = ims.get(channel)
            if channel_id is None:
                return None  # no DM with that user: nothing can have been posted to them
        elif not _is_id(channel):
            names = await self._shared.found(
                ("names", call.tenant_id), doubt, lambda _: self._list_channels(call, token)
            )
            channel_id = names.get(channel.lstrip("#"))
            if channel_id is None:
                return None  # no channel of that name (among those listed): posted as before
        thread = str(args.get("thread_ts") or "")
        found = await self._shared.found(
            ("messages", call.tenant_id, channel_id, thread),
            doubt,
            lambda oldest: self._read_channel(call, token, channel_id, thread, oldest),
        )
        return output_for(found, call)

    async def _list_channels(self, call: ConnectorCall, token: str, *, ims: bool = False) -> Found:
        """Channel IDs by name, or (``ims``) direct message channel IDs by user ID."""
        ids: Found = {}
        types = "im" if ims else "public_channel,private_channel"
        async for page in self._pages(call, token, "conversations.list", {
            "types": types, "exclude_archived": "true"
        }, page_size=LIST_PAGE_SIZE, max_pages=LIST_MAX_PAGES):  # fmt: skip
            for entry in page.get("channels") or ():
                label = entry.get("user" if ims else "name") if isinstance(entry, dict) else None
                if label and entry.get("id"):
                    ids[str(label)] = str(entry["id"])
        return ids

    async def _read_channel(
        self, call: ConnectorCall, token: str, channel_id: str, thread: str, oldest: float
    ) -> Found:
        found: Found = {}
        method = "conversations.replies" if thread else "conversations.history"
        params = {"channel": channel_id, "oldest": f"{oldest:.6f}", "include_all_metadata": "true"}
        if thread:
            params["ts"] = thread
        async for page in self._pages(call, token, method, params):
            for message in page.get("messages") or ():
                metadata = message.get("metadata") if isinstance(message, dict) else None
                if not isinstance(metadata, dict) or metadata.get("event_type") != EVENT_TYPE:
                    continue
                payload = metadata.get("event_payload")
                key = payload.get("idempotency_key") if isinstance(payload, dict) else None
                if isinstance(key, str) and isinstance(message.get("ts"), str) and key not in found:
                    found[key] = message_output(channel_id, message["ts"], message.get("thread_ts"))
        return found

    async def _pages(
        self,
        call: ConnectorCall,
        token: str,
        method: str,
        params: dict[str, str],
        *,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
    ) -> AsyncIterator[dict[str, Any]]:
        what = f"slack {method}"
        cursor = ""
        for _ in range(max_pages):
            query = {**params, "limit": str(page_size), **({"cursor": cursor} if cursor else {})}
            url = URL(f"{call.base_url.rstrip('/')}/api/{method}").with_query(query)
            self.reads += 1
            reply = await send(
                call, "GET", url, what=what, limit=READ_LIMIT,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )  # fmt: skip
            data = slack_data(reply, what)
            yield data
            meta = data.get("response_metadata")
            cursor = str(meta.get("next_cursor") or "") if isinstance(meta, dict) else ""
            if not cursor:
                return


def _is_id(channel: str) -> bool:
    return channel[:1] in "CGD" and channel.isupper() and channel.isalnum()


def _is_user(channel: str) -> bool:
    return channel[:1] in "UW" and channel.isupper() and channel.isalnum()
