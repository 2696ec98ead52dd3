"""Finding, in Slack itself, a message an earlier attempt of a command already posted.

``chat.postMessage`` takes no idempotency key, so each message we post carries one in
its metadata (``event_type`` :data:`EVENT_TYPE`, ``event_payload.idempotency_key``).
When an earlier attempt may have posted (a timeout after the request was sent, a worker
that died or stalled with the call in flight), the worker asks :meth:`SlackLookup.find`
before posting again: it reads the channel (``conversations.history``, or the thread with
``conversations.replies``) back to the command's submission, with metadata, and answers
with the message's ``{channel, ts}`` when one carries the key.

Reads are few and shared. A read covers every key of its channel, so after a partition
changes hands its commands in doubt cost one read per channel, not one per command; it
answers a later question only if it began after that question's doubtful attempts were
all sent (``Doubt.settled_at``) and reaches back far enough (``Doubt.since``). Channel
names resolve to IDs through ``conversations.list`` (history takes IDs only). Each read
stops after :data:`MAX_PAGES` pages: a channel busier than that since the command was
submitted is not fully checked, and the command is posted as before. Both caches are
bounded.

Needs the ``channels:history`` / ``groups:history`` and ``channels:read`` /
``groups:read`` scopes; without them the check fails and the command is posted as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from core.lru import LRU

from ._base import ConnectorCall, Doubt
from ._http import send
from ._slack_api import slack_data

__all__ = ["EVENT_TYPE", "SlackLookup", "marker"]

EVENT_TYPE = "switchyard_command"
MAX_PAGES = 5
PAGE_SIZE = 200
CACHE_ENTRIES = 1_000

def marker(idempotency_key: str) -> dict[str, Any]:
    """The ``metadata`` of a message we post: what :meth:`SlackLookup.find` looks for."""
    return {"event_type": EVENT_TYPE, "event_payload": {"idempotency_key": idempotency_key}}


@dataclass(slots=True)
class _Read:
    read_at: float  # when the read began (Unix seconds)
    oldest: float  # how far back it reached
    found: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # key -> (ts, thread_ts)

    def answers(self, doubt: Doubt) -> bool:
        """Whether this read shows every attempt in ``doubt``: begun after they were all
        sent, and reaching back to the command's submission."""
        return self.read_at >= doubt.settled_at and self.oldest <= doubt.since


class SlackLookup:
    def __init__(self, capacity: int = CACHE_ENTRIES) -> None:
        self.reads = 0  # upstream read requests made (for tests and the curious)
        self._channels: LRU[tuple[str, str, str], _Read] = LRU(capacity)
        self._names: LRU[str, tuple[float, dict[str, str]]] = LRU(capacity)
        # Reads under way, which later questions they answer may join.
        self._reading: dict[tuple[str, str, str], tuple[_Read, asyncio.Future[_Read]]] = {}
        self._listing: dict[str, tuple[float, asyncio.Future[dict[str, str]]]] = {}

    async def find(
        self, call: ConnectorCall, token: str, args: Mapping[str, Any], doubt: Doubt
    ) -> dict[str, Any] | None:
        """The output of the message an earlier attempt posted, or None if none is found.

        Raises:
            RetryableError, PermanentError, CredentialsExpired: a read failed (as the
                post would: rate limits, 5xx, timeouts, refused scopes).
        """
        channel = str(args["channel"])
        channel_id = channel if _is_id(channel) else await self._channel_id(call, token, channel, doubt)
        if channel_id is None:
            return None  # no channel of that name: nothing can have been posted to it
        thread = str(args.get("thread_ts") or "")
        key = (call.tenant_id, channel_id, thread)
        read = self._channels.get(key)
        if read is None or not read.answers(doubt):
            read = await self._shared_read(key, doubt, call, token)
        hit = read.found.get(call.idempotency_key)
        if hit is None:
            return None
        output: dict[str, Any] = {"channel": channel_id, "ts": hit[0]}
        if hit[1]:
            output["thread_ts"] = hit[1]
        return output

    async def _shared_read(
        self, key: tuple[str, str, str], doubt: Doubt, call: ConnectorCall, token: str
    ) -> _Read:
        """A read of the channel that answers ``doubt``: one already under way if it does
        (the commands in doubt after a rebalance ask together), else a new one."""
        pending = self._reading.get(key)
        if pending is not None and pending[0].answers(doubt):
            return await asyncio.shield(pending[1])
        read = _Read(read_at=time.time(), oldest=doubt.since)
        task = asyncio.ensure_future(self._read_channel(read, call, token, key[1], key[2]))
        self._reading[key] = (read, task)

        def done(_: asyncio.Future[_Read]) -> None:
            if self._reading.get(key, (None, None))[1] is task:
                del self._reading[key]
            if not task.cancelled() and task.exception() is None:
                self._channels.put(key, read)

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _channel_id(self, call: ConnectorCall, token: str, channel: str, doubt: Doubt) -> str | None:
        name = channel.lstrip("#")
        known = self._names.get(call.tenant_id)
        if known is not None and (name in known[1] or known[0] >= doubt.settled_at):
            return known[1].get(name)
        pending = self._listing.get(call.tenant_id)
        if pending is None or pending[0] < doubt.settled_at:
            read_at = time.time()
            task = asyncio.ensure_future(self._list_channels(call, token))
            pending = self._listing[call.tenant_id] = (read_at, task)

            def done(_: asyncio.Future[dict[str, str]], tenant: str = call.tenant_id) -> None:
                if self._listing.get(tenant, (0.0, None))[1] is task:
                    del self._listing[tenant]
                if not task.cancelled() and task.exception() is None:
                    self._names.put(tenant, (read_at, task.result()))

            task.add_done_callback(done)
        ids = await asyncio.shield(pending[1])
        return ids.get(name)

    async def _list_channels(self, call: ConnectorCall, token: str) -> dict[str, str]:
        ids: dict[str, str] = {}
        async for page in self._pages(call, token, "conversations.list", {
            "types": "public_channel,private_channel", "exclude_archived": "true"
        }):  # fmt: skip
            for entry in page.get("channels") or ():
                if isinstance(entry, dict) and entry.get("name") and entry.get("id"):
                    ids[str(entry["name"])] = str(entry["id"])
        return ids

    async def _read_channel(
        self, read: _Read, call: ConnectorCall, token: str, channel_id: str, thread: str
    ) -> _Read:
        method = "conversations.replies" if thread else "conversations.history"
        params = {"channel": channel_id, "oldest": f"{read.oldest:.6f}", "include_all_metadata": "true"}
        if thread:
            params["ts"] = thread
        async for page in self._pages(call, token, method, params):
            for message in page.get("messages") or ():
                metadata = message.get("metadata") if isinstance(message, dict) else None
                if not isinstance(metadata, dict) or metadata.get("event_type") != EVENT_TYPE:
                    continue
                payload = metadata.get("event_payload")
                found = payload.get("idempotency_key") if isinstance(payload, dict) else None
                if isinstance(found, str) and isinstance(message.get("ts"), str):
                    read.found.setdefault(found, (message["ts"], message.get("thread_ts")))
        return read

    async def _pages(
        self, call: ConnectorCall, token: str, method: str, params: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        what = f"slack {method}"
        cursor = ""
        for _ in range(MAX_PAGES):
            query = {**params, "limit": str(PAGE_SIZE), **({"cursor": cursor} if cursor else {})}
            url = URL(f"{call.base_url.rstrip('/')}/api/{method}").with_query(query)
            self.reads += 1
            reply = await send(
                call, "GET", url, what=what,
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
