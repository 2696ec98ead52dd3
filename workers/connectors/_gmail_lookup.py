"""Finding, in the mailbox itself, a message an earlier attempt of a command already sent.

``users.messages.send`` takes no idempotency key, and Gmail replaces a client's
``Message-ID`` with its own, so each message we send carries our key in a header of its
own (:data:`HEADER`), which Gmail keeps in the sent copy. When an earlier attempt may
have sent (a timeout after the request was sent, a worker that died or stalled with the
call in flight), the worker asks :meth:`GmailLookup.find` before sending again: it lists
the mailbox's ``SENT`` messages, newest first, and reads each one's :data:`HEADER` and
``internalDate`` (``format=metadata``) back to the command's submission; a message that
carries the key is the command's output (``{id, threadId, labelIds}``).

One read serves every key of the mailbox (:mod:`._shared_reads`). It costs one list
request per :data:`PAGE_SIZE` messages plus one small request per message, made
:data:`CONCURRENT_GETS` at a time, and stops after :data:`MAX_PAGES` pages: a mailbox
that sent more than that since the command was submitted is not fully checked, and the
command is sent as before. Needs the ``gmail.metadata`` (or ``gmail.readonly``) scope
besides ``gmail.send``; without it Gmail answers 403 and the command is sent as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from yarl import URL

from core.errors import RetryableError
from schemas import ErrorCode

from ._base import ConnectorCall, Doubt
from ._http import raise_for_status, send
from ._shared_reads import READ_LIMIT, Found, SharedReads, for_reads

__all__ = ["HEADER", "GmailLookup", "message_output"]

HEADER = "X-Switchyard-Idempotency-Key"
MAX_PAGES = 5
PAGE_SIZE = 100
CONCURRENT_GETS = 8


def message_output(message: Mapping[str, Any]) -> dict[str, Any]:
    """A sent message as the command's output: ``{id, threadId, labelIds}``."""
    return {
        "id": message.get("id"),
        "threadId": message.get("threadId"),
        "labelIds": message.get("labelIds", []),
    }


class GmailLookup:
    def __init__(self) -> None:
        self.reads = 0  # upstream read requests made (for tests and the curious)
        self._shared = SharedReads()

    async def find(self, call: ConnectorCall, token: str, doubt: Doubt) -> dict[str, Any] | None:
        """The output of a message an earlier attempt of ``call`` sent, or None."""
        reader = for_reads(call)
        found = await self._shared.found(
            (call.tenant_id, call.base_url), doubt, lambda oldest: self._read_sent(reader, token, oldest)
        )
        output = found.get(call.idempotency_key)
        return dict(output) if output is not None else None

    async def _read_sent(self, call: ConnectorCall, token: str, oldest: float) -> Found:
        messages = URL(f"{call.base_url.rstrip('/')}/gmail/v1/users/me/messages")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        gate = asyncio.Semaphore(CONCURRENT_GETS)
        found: Found = {}
        page_token: str | None = None
        for _ in range(MAX_PAGES):
            query = {"labelIds": "SENT", "maxResults": str(PAGE_SIZE)}
            if page_token:
                query["pageToken"] = page_token
            listed = await self._get(call, messages.with_query(query), headers, "gmail users.messages.list")
            ids = [m["id"] for m in listed.get("messages", []) if isinstance(m, dict) and isinstance(m.get("id"), str)]

            async def metadata(ident: str) -> dict[str, Any]:
                url = (messages / ident).with_query({"format": "metadata", "metadataHeaders": HEADER})
                async with gate:
                    return await self._get(call, url, headers, "gmail users.messages.get")

            reached_older = False
            for message in await asyncio.gather(*(metadata(i) for i in ids)):
                key = _header(message, HEADER)
                if key:
                    found.setdefault(key, message_output(message))
                reached_older |= _sent_at(message) < oldest
            page_token = listed.get("nextPageToken")
            if reached_older or not isinstance(page_token, str) or not page_token:
                break
        return found

    async def _get(self, call: ConnectorCall, url: URL, headers: dict[str, str], what: str) -> dict[str, Any]:
        self.reads += 1
        reply = await send(call, "GET", url, what=what, headers=headers, limit=READ_LIMIT)
        raise_for_status(reply, what)
        data = reply.json(what)
        if not isinstance(data, dict):
            raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: unexpected response")
        return data


def _header(message: Mapping[str, Any], name: str) -> str | None:
    payload = message.get("payload")
    entries = payload.get("headers") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and str(entry.get("name", "")).lower() == name.lower():
            value = entry.get("value")
            return value.strip() if isinstance(value, str) else None
    return None


def _sent_at(message: Mapping[str, Any]) -> float:
    """``internalDate`` (epoch milliseconds, as a string) in seconds; 0 when unreadable."""
    try:
        return int(message.get("internalDate", 0)) / 1000
    except (TypeError, ValueError):
        return 0.0
