"""Notion: create a page under a page or a database (``POST /v1/pages``).

Plain-text ``content`` becomes paragraph blocks: one per blank-line separated
paragraph, each rich-text item at most 2,000 characters, at most 100 blocks per
request (Notion's documented request limits).

Side effects: Notion takes no idempotency key. A page created in a database can carry
ours in a text property the workspace names with ``key_property`` (a column it hides
in its views); before creating such a page again after an attempt whose outcome is
unknown, the runtime asks :meth:`NotionConnector.find_done`, which queries the database
for pages created since the command's submission with that property set (newest first,
at most :data:`MAX_PAGES` pages of 100, shared by every command in doubt; past those, for
the command's key alone). Notion does not say how soon a new page shows in
a database query, so a query counts only when it begins :data:`INDEX_LAG` seconds after
the last attempt in doubt was sent, as Jira's search does. The query needs the
integration's "read content" capability and the database shared with it; a 4xx from it
other than 401 makes the check give up and the page is created as before (a 401 fails
the command, as the create would). A page under a page has only
a title, so there the check has nowhere to look and a retry after an ambiguous failure
may create a second page. ``Idempotency-Key`` is sent too (Notion ignores it).

Databases with several data sources (Notion's 2025-09-03 model): under
:data:`NOTION_VERSION` (2022-06-28) Notion refuses a ``database_id`` parent and the
database query for those (its 2025-09-03 upgrade guide). Name the source instead with
``data_source_id`` (the database's settings, "Manage data sources", "Copy data source
ID"): the page is created in it and the check queries it, both with
:data:`DATA_SOURCES_VERSION`. A ``database_id`` keeps working for single-source
databases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import Connector, ConnectorCall, Doubt, Operation, maybe, output_schema
from ._http import raise_for_status, send
from ._shared_reads import (
    READ_LIMIT,
    Found,
    SharedReads,
    for_reads,
    index_wait,
    indexed,
    listed_page,
    output_for,
)

__all__ = ["NOTION_VERSION", "NotionConnector", "paragraph_blocks"]

NOTION_VERSION = "2022-06-28"
# The version that knows data sources (data_source_id parents, /v1/data_sources/{id}/query).
DATA_SOURCES_VERSION = "2025-09-03"
MAX_PAGES = 5
PAGE_SIZE = 100
# Seconds by which a database query must begin after the attempts in doubt were sent.
INDEX_LAG = 5.0
# In a read's Found: it stopped at its page limit with more pages left (no key is empty).
_CUT_SHORT = ""
_TEXT_LIMIT = 2_000
_MAX_BLOCKS = 100
_MAX_RICH_TEXT = 100
# Notion's request limit: a payload of at most 500 KB ("Request limits" in its reference).
MAX_PAYLOAD_BYTES = 500_000
_ID = {"type": "string", "pattern": r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$"}

CREATE_PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "parent_page_id": {**_ID, "description": "Create the page under this page."},
        "database_id": {**_ID, "description": "Create the page as a row of this database."},
        "data_source_id": {
            **_ID,
            "description": "Create the page as a row of this data source (a database with several).",
        },
        "title": {"type": "string", "minLength": 1, "maxLength": _TEXT_LIMIT},
        "content": {"type": "string", "maxLength": 200_000, "description": "Plain-text body."},
        "title_property": {
            "type": "string",
            "maxLength": 100,
            "description": "Title property of the database (default 'Name').",
        },
        "key_property": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": (
                "A text property of the database that records the command's idempotency key "
                "(hide it in the database's views), so that a retry after an ambiguous "
                "failure finds the page instead of creating a second one."
            ),
        },
    },
    "required": ["title"],
    "oneOf": [{"required": ["parent_page_id"]}, {"required": ["database_id"]}, {"required": ["data_source_id"]}],
    "dependentSchemas": {
        "key_property": {"anyOf": [{"required": ["database_id"]}, {"required": ["data_source_id"]}]}
    },
    "additionalProperties": False,
}


def utf16_length(text: str) -> int:
    """Notion's length of a text: UTF-16 code units, as JavaScript counts."""
    return len(text.encode("utf-16-le")) // 2


def _rich_text(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"content": chunk}} for chunk in _chunks(text, _TEXT_LIMIT)]


def _chunks(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` UTF-16 units, never splitting a character
    (an emoji is two units: 1,500 of them are 3,000)."""
    if utf16_length(text) == len(text):
        return [text[start : start + limit] for start in range(0, len(text), limit)]
    chunks, start, units = [], 0, 0
    for index, char in enumerate(text):
        width = 2 if ord(char) > 0xFFFF else 1
        if units + width > limit:
            chunks.append(text[start:index])
            start, units = index, 0
        units += width
    chunks.append(text[start:])
    return chunks


def paragraph_blocks(content: str) -> list[dict[str, Any]]:
    """Paragraph blocks for plain text (blank lines separate paragraphs).

    Raises:
        ValueError: when the text needs more blocks or rich-text items than Notion accepts.
    """
    paragraphs = [part.strip("\n") for part in content.replace("\r\n", "\n").split("\n\n")]
    blocks = []
    for paragraph in paragraphs:
        if not paragraph.strip():
            continue
        rich = _rich_text(paragraph)
        if len(rich) > _MAX_RICH_TEXT:
            raise ValueError("a paragraph is longer than Notion accepts")
        blocks.append({"object": "block", "type": "paragraph", "paragraph": {"rich_text": rich}})
    if len(blocks) > _MAX_BLOCKS:
        raise ValueError(f"content has more than {_MAX_BLOCKS} paragraphs")
    return blocks


@dataclass(frozen=True, slots=True)
class _Rows:
    """Where a page is created as a row, and queried: a database or one of its data sources."""

    parent: str  # the parent's type: "database_id" or "data_source_id"
    id: str
    path: str  # /v1/<path>/<id>/query
    version: str  # the Notion-Version that knows this parent and query

    @staticmethod
    def of(args: Mapping[str, Any]) -> _Rows | None:
        if "data_source_id" in args:
            return _Rows("data_source_id", args["data_source_id"], "data_sources", DATA_SOURCES_VERSION)
        if "database_id" in args:
            return _Rows("database_id", args["database_id"], "databases", NOTION_VERSION)
        return None


PAGE_SCHEMA = output_schema(
    {
        "id": maybe("string", "The page's ID (a UUID)."),
        "url": maybe("string", "The page's URL."),
    },
    "id",
    "url",
)


class NotionConnector(Connector):
    name: ClassVar[str] = "notion"
    credential_shapes: ClassVar[tuple[frozenset[str], ...]] = (frozenset({"token"}), frozenset({"access_token"}))
    default_base_url: ClassVar[str] = "https://api.notion.com"
    operations: ClassVar[dict[str, Operation]] = {
        "pages.create": Operation(
            description="Create a Notion page with a title and plain-text content.",
            input_schema=CREATE_PAGE_SCHEMA,
            output_schema=PAGE_SCHEMA,
            destructive=False,  # it creates; nothing already there changes
        )
    }

    finds_done: ClassVar[bool] = True

    def __init__(self, *, index_lag: float = INDEX_LAG) -> None:
        self.reads = 0  # database query pages read (for tests and the curious)
        self.index_lag = index_lag
        self._shared = SharedReads()

    @staticmethod
    def _headers(call: ConnectorCall, version: str = NOTION_VERSION) -> dict[str, str]:
        token = credential(call, "token", "access_token", connector="notion")
        return {
            "Authorization": f"Bearer {token}",
            "Notion-Version": version,
            "Accept": "application/json",
        }

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Create the page; returns ``{id, url}``.

        Raises:
            CredentialsExpired: 401.
            RetryableError: 429, 409 (Notion's conflict_error), 5xx, timeouts, connection errors.
            PermanentError: other 4xx, bad arguments, missing token.
        """
        args = validated(self, call)
        what = "notion pages.create"
        title = _rich_text(args["title"])  # 2,000 characters may be 4,000 UTF-16 units
        rows = _Rows.of(args)
        headers = self._headers(call, rows.version if rows is not None else NOTION_VERSION)
        if rows is None:
            parent = {"type": "page_id", "page_id": args["parent_page_id"]}
            # Under a page the only valid property is the title, keyed "title".
            properties: dict[str, Any] = {"title": {"title": title}}
        else:
            parent = {"type": rows.parent, rows.parent: rows.id}
            properties = {args.get("title_property") or "Name": {"title": title}}
            if "key_property" in args:
                if args["key_property"] in properties:
                    raise PermanentError(
                        ErrorCode.INVALID_ARGUMENTS, f"{what}: key_property names the title property"
                    )
                properties[args["key_property"]] = {"rich_text": _rich_text(call.idempotency_key)}
        body: dict[str, Any] = {"parent": parent, "properties": properties}
        try:
            children = paragraph_blocks(args.get("content", ""))
        except ValueError as exc:
            raise PermanentError(ErrorCode.INVALID_ARGUMENTS, f"{what}: {exc}") from exc
        if children:
            body["children"] = children
        size = len(orjson.dumps(body))
        if size > MAX_PAYLOAD_BYTES:
            raise PermanentError(
                ErrorCode.INVALID_ARGUMENTS,
                f"{what}: the page is {size // 1000} KB of JSON, Notion takes at most 500 KB",
            )
        reply = await send(
            call,
            "POST",
            f"{call.base_url.rstrip('/')}/v1/pages",
            what=what,
            headers=headers,
            json_body=body,
        )
        if reply.status == 409:
            # conflict_error: "potentially due to a data collision ... try again".
            raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: 409 conflict, retried", http_status=409)
        raise_for_status(reply, what)
        data = reply.json(what)
        if not isinstance(data, dict) or "id" not in data:
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: response has no id")
        return _output(data)

    def check_wait(self, doubt: Doubt) -> float:
        return index_wait(doubt, self.index_lag)

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        """The ``{id, url}`` of a page an earlier attempt created, or None (also when the
        page would have no ``key_property`` to find it by)."""
        args = validated(self, call)
        field, rows = args.get("key_property"), _Rows.of(args)
        if field is None or rows is None:
            return None
        reader = for_reads(call)
        doubt = await indexed(doubt, self.index_lag)
        found = await self._shared.found(
            (call.tenant_id, call.base_url, rows.parent, rows.id.replace("-", "").lower(), field),
            doubt,
            lambda oldest: self._recent(reader, rows, field, oldest),
        )
        if found.get(_CUT_SHORT):
            # The shared read stopped at its page limit with older pages left: the page
            # sought, or the oldest page with its key (a copy may be newer), can lie
            # beyond it, near the far end of a newest-first list. Ask for the key alone.
            return await self._oldest_with_key(reader, rows, field, call.idempotency_key, doubt.since)
        return output_for(found, call)

    async def _read(self, call: ConnectorCall, rows: _Rows, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """One page of a database (or data source) query: the answer and its results."""
        what = f"notion {rows.path}.query"
        self.reads += 1
        reply = await send(
            call, "POST", f"{call.base_url.rstrip('/')}/v1/{rows.path}/{rows.id}/query", what=what,
            headers=self._headers(call, rows.version), json_body=body, limit=READ_LIMIT,
        )  # fmt: skip
        return listed_page(reply, what, "results")

    async def _recent(self, call: ConnectorCall, rows: _Rows, field: str, oldest: float) -> Found:
        """Our keys among the database's pages created since ``oldest`` with ``field`` set,
        newest first, at most :data:`MAX_PAGES` pages. A key on several pages (a person
        duplicated one) stands for the oldest. ``found[_CUT_SHORT]`` says that more pages
        were left."""
        body: dict[str, Any] = {
            "filter": {"and": [_since(oldest), {"property": field, "rich_text": {"is_not_empty": True}}]},
            "sorts": [{"timestamp": "created_time", "direction": "descending"}],
            "page_size": PAGE_SIZE,
        }
        found: Found = {}
        for _ in range(MAX_PAGES):
            page, results = await self._read(call, rows, body)
            for result in results:
                key = _plain_text(result, field)
                if key:
                    found[key] = _output(result)  # newest first: the oldest is seen last
            following = page.get("next_cursor")
            if page.get("has_more") is not True or not isinstance(following, str) or not following:
                return found
            body["start_cursor"] = following
        found[_CUT_SHORT] = True
        return found

    async def _oldest_with_key(
        self, call: ConnectorCall, rows: _Rows, field: str, key: str, oldest: float
    ) -> dict[str, Any] | None:
        """The oldest page created since ``oldest`` with ``key`` in ``field``, or None
        (Notion keeps creation times to the minute and does not say how it orders pages
        of the same minute)."""
        body = {
            "filter": {"and": [_since(oldest), {"property": field, "rich_text": {"equals": key}}]},
            "sorts": [{"timestamp": "created_time", "direction": "ascending"}],
            "page_size": 1,
        }
        _, results = await self._read(call, rows, body)
        return next((_output(r) for r in results if _plain_text(r, field) == key), None)


def _since(moment: float) -> dict[str, Any]:
    """A filter for pages created at or after ``moment`` (Notion keeps creation times to
    the minute, rounded down; ``moment`` is on a whole minute)."""
    when = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"timestamp": "created_time", "created_time": {"on_or_after": when}}


def _plain_text(page: Any, field: str) -> str | None:
    """The text of a page's rich-text property ``field``, if it has one."""
    properties = page.get("properties") if isinstance(page, dict) else None
    value = properties.get(field) if isinstance(properties, dict) else None
    items = value.get("rich_text") if isinstance(value, dict) else None
    if not isinstance(items, list):
        return None
    return "".join(str(item.get("plain_text", "")) for item in items if isinstance(item, dict))


def _output(page: Mapping[str, Any]) -> dict[str, Any]:
    """A page as the command's output: ``{id, url}``."""
    return {"id": page.get("id"), "url": page.get("url")}
