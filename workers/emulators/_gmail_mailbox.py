"""What the Gmail emulator remembers of sent messages, for ``users.messages.list`` and
``users.messages.get``.

``list`` answers ``{messages: [{id, threadId}], nextPageToken?, resultSizeEstimate}``
newest first, filtered by ``labelIds`` (every message here is ``SENT``), ``maxResults``
up to 500; ``q`` is not emulated and is refused. ``get`` answers ``format=minimal`` and
``format=metadata`` (with ``metadataHeaders``); the full and raw formats are not
emulated. Bounded: messages per mailbox, mailboxes overall, and only a message's
``KEPT_HEADERS`` are kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from email.message import EmailMessage
from typing import Any

import orjson
from aiohttp import web

from workers.connectors._gmail_lookup import HEADER

from ._scoped_log import ScopedLog, page_start, page_token

__all__ = ["Mailbox", "gmail_read"]

MESSAGES_PER_MAILBOX = 1_000
MAX_MAILBOXES = 2_000
# What metadata reads can show: our key, and the subject for a person reading the log.
KEPT_HEADERS = frozenset({HEADER.lower(), "subject"})


class Mailbox:
    def __init__(self, *, per_mailbox: int = MESSAGES_PER_MAILBOX, max_mailboxes: int = MAX_MAILBOXES) -> None:
        self._sent = ScopedLog(per_scope=per_mailbox, max_scopes=max_mailboxes)

    def add(self, tenant: str, ident: str, message: EmailMessage) -> None:
        """Remember a sent message: its ids, time and the headers ``KEPT_HEADERS`` names
        (not its recipients or body: memory stays bounded by the message count)."""
        self._sent.add(tenant, {
            "id": ident, "threadId": ident, "labelIds": ["SENT"],
            "internalDate": str(int(time.time() * 1000)),
            "headers": [
                {"name": name, "value": str(value)[:998]}
                for name, value in message.items() if name.lower() in KEPT_HEADERS
            ],
        })  # fmt: skip

    def newest_first(self, tenant: str) -> Iterator[dict[str, Any]]:
        return reversed(self._sent.entries(tenant))

    def clear(self) -> None:
        self._sent.clear()


def gmail_read(mailbox: Mailbox, tenant: str, request: web.Request) -> web.Response:
    """``GET /gmail/v1/users/me/messages`` or ``GET .../messages/{id}``."""
    ident = request.match_info.get("id")
    if ident is None:
        return _list(mailbox, tenant, request)
    message = next((m for m in mailbox.newest_first(tenant) if m["id"] == ident), None)
    if message is None:
        return _error(404, "Requested entity was not found.", "NOT_FOUND")
    shown_format = request.query.get("format", "full")
    if shown_format not in ("minimal", "metadata"):
        return _error(400, "The emulator serves format=minimal and format=metadata only.", "INVALID_ARGUMENT")
    shown = {k: message[k] for k in ("id", "threadId", "labelIds", "internalDate")}
    if shown_format == "metadata":
        wanted = {name.lower() for name in request.query.getall("metadataHeaders", [])}
        shown["payload"] = {
            "mimeType": "text/plain",
            "headers": [h for h in message["headers"] if not wanted or h["name"].lower() in wanted],
        }
    return _answer(shown)


def _list(mailbox: Mailbox, tenant: str, request: web.Request) -> web.Response:
    query = request.query
    if query.get("q"):
        return _error(400, "The emulator does not evaluate q; filter with labelIds.", "INVALID_ARGUMENT")
    try:
        size = max(1, min(500, int(query.get("maxResults", "100"))))
        start = page_start(query.get("pageToken"))
    except ValueError:
        return _error(400, "Invalid maxResults or pageToken.", "INVALID_ARGUMENT")
    labels = set(query.getall("labelIds", []))
    messages = [m for m in mailbox.newest_first(tenant) if labels <= set(m["labelIds"])]
    page: dict[str, Any] = {"resultSizeEstimate": len(messages)}
    if messages[start : start + size]:  # Gmail leaves "messages" out of an empty answer
        page["messages"] = [{"id": m["id"], "threadId": m["threadId"]} for m in messages[start : start + size]]
    if start + size < len(messages):
        page["nextPageToken"] = page_token(start + size)
    return _answer(page)


def _answer(payload: Mapping[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _error(status: int, message: str, state: str) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": state}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
