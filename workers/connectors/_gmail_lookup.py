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
:data:`CONCURRENT_GETS` at a time in list order, and stops after the first batch that
lies wholly before the submission (so a mailbox that sent nothing since costs one list
and :data:`CONCURRENT_GETS` reads) or after :data:`MAX_PAGES` pages: a mailbox that sent
more than that since the command was submitted is not fully checked, and the command is
sent as before. A message deleted between the list and its read is skipped. Needs the
``gmail.metadata`` (or ``gmail.readonly``) scope besides ``gmail.send``; without it Gmail
answers 403 and the command is sent as before. Gmail's rate limits (429, or 403 with a
rate-limit reason) are retried like a send's (:func:`gmail_error`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from yarl import URL

from core.errors import RetryableError
from schemas import ErrorCode

from ._base import MAX_RETRY_AFTER, ConnectorCall, Doubt, maybe, output_schema, parse_retry_after
from ._http import Reply, raise_for_status, send
from ._shared_reads import READ_LIMIT, Found, SharedReads, for_reads, output_for

__all__ = ["HEADER", "SENT_SCHEMA", "GmailLookup", "gmail_error", "message_output"]

HEADER = "X-Switchyard-Idempotency-Key"
MAX_PAGES = 5
PAGE_SIZE = 100
CONCURRENT_GETS = 8
# 403 reasons that mean "slow down", not "not allowed" (Gmail's usage limits; its
# "Resolve errors" guide: dailyLimitExceeded is the project's daily quota).
RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded", "quotaExceeded"}
)
_T = TypeVar("_T")


def gmail_error(reply: Reply, what: str) -> None:
    """:func:`._http.raise_for_status` for Gmail: a 403 with a rate-limit reason is
    retryable too (Gmail signals limits so as well as with 429), and a limit's wait is
    also read from the error's message ("User-rate limit exceeded. Retry after
    <time>"), where Gmail's sending limits give it, when no ``Retry-After`` does."""
    if reply.status not in (403, 429):
        raise_for_status(reply, what)
        return
    try:
        error = reply.json(what)["error"]
        reasons = {e.get("reason") for e in error["errors"] if isinstance(e, dict)}
        told = _retry_time(str(error.get("message", "")))
    except (RetryableError, KeyError, TypeError, AttributeError):
        reasons, told = set(), None
    wait = parse_retry_after(reply.headers.get("Retry-After"))
    if reply.status == 429 or reasons & RATE_LIMIT_REASONS:
        raise RetryableError(
            ErrorCode.UPSTREAM_RATE_LIMITED, f"{what}: {reply.status} rate limited",
            retry_after=wait if wait is not None else told, http_status=reply.status,
        )  # fmt: skip
    raise_for_status(reply, what)


_RETRY_AT = re.compile(r"Retry after (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z)")


def _retry_time(message: str) -> float | None:
    """Seconds until the time a Gmail error message names (at most a day), or None."""
    found = _RETRY_AT.search(message[:1000])
    if found is None:
        return None
    when = datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
    return max(0.0, min((when - datetime.now(UTC)).total_seconds(), MAX_RETRY_AFTER))


def message_output(message: Mapping[str, Any]) -> dict[str, Any]:
    """A sent message as the command's output: ``{id, threadId, labelIds}``."""
    labels = message.get("labelIds")
    return {
        "id": message.get("id"),
        "threadId": message.get("threadId"),
        "labelIds": [label for label in labels if isinstance(label, str)] if isinstance(labels, list) else [],
    }


SENT_SCHEMA = output_schema(
    {
        "id": maybe("string", "The sent message's ID."),
        "threadId": maybe("string", "The ID of the thread the message belongs to."),
        "labelIds": {"type": "array", "items": {"type": "string"}, "description": "Its labels (SENT)."},
    },
    "id",
    "threadId",
    "labelIds",
)


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
        return output_for(found, call)

    async def _read_sent(self, call: ConnectorCall, token: str, oldest: float) -> Found:
        messages = URL(f"{call.base_url.rstrip('/')}/gmail/v1/users/me/messages")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        found: Found = {}
        page_token: str | None = None
        for _ in range(MAX_PAGES):
            query = {"labelIds": "SENT", "maxResults": str(PAGE_SIZE)}
            if page_token:
                query["pageToken"] = page_token
            what = "gmail users.messages.list"
            listed = _json(await self._get(call, messages.with_query(query), headers, what), what)
            ids = [m["id"] for m in listed.get("messages", []) if isinstance(m, dict) and isinstance(m.get("id"), str)]
            for start in range(0, len(ids), CONCURRENT_GETS):
                batch = ids[start : start + CONCURRENT_GETS]
                dates: list[float] = []
                for message in await _all(self._metadata(call, messages / ident, headers) for ident in batch):
                    if message is None:  # deleted since the list
                        continue
                    key = _header(message, HEADER)
                    if key:
                        found.setdefault(key, message_output(message))
                    if (sent_at := _sent_at(message)) is not None:
                        dates.append(sent_at)
                # The list is newest first: once a whole batch is older than the
                # submission, so is the rest. (Not at the first older message: mail
                # imported with an older date may sit among newer ones.)
                if dates and max(dates) < oldest:
                    return found
            page_token = listed.get("nextPageToken")
            if not isinstance(page_token, str) or not page_token:
                break
        return found

    async def _metadata(self, call: ConnectorCall, url: URL, headers: dict[str, str]) -> dict[str, Any] | None:
        """A message's ids, date and :data:`HEADER`; None when it was deleted since the list."""
        what = "gmail users.messages.get"
        reply = await self._get(call, url.with_query({"format": "metadata", "metadataHeaders": HEADER}), headers, what)
        return None if reply.status == 404 else _json(reply, what)

    async def _get(self, call: ConnectorCall, url: URL, headers: dict[str, str], what: str) -> Reply:
        self.reads += 1
        return await send(call, "GET", url, what=what, headers=headers, limit=READ_LIMIT)


def _json(reply: Reply, what: str) -> dict[str, Any]:
    """The JSON object of a successful reply; raises our error for a failed one."""
    gmail_error(reply, what)
    data = reply.json(what)
    if not isinstance(data, dict):
        raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: unexpected response")
    return data


async def _all(reads: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Every read's answer, in order; the first failure cancels the others and is raised
    as itself (not in an ExceptionGroup: the runtime tells a 401 from a 429 by type)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(read) for read in reads]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _header(message: Mapping[str, Any], name: str) -> str | None:
    payload = message.get("payload")
    entries = payload.get("headers") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and str(entry.get("name", "")).lower() == name.lower():
            value = entry.get("value")
            return value.strip() if isinstance(value, str) else None
    return None


def _sent_at(message: Mapping[str, Any]) -> float | None:
    """``internalDate`` (epoch milliseconds, as a string) in seconds; None when unreadable."""
    try:
        return int(message["internalDate"]) / 1000
    except (KeyError, TypeError, ValueError):
        return None
