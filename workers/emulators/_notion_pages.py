"""What the Notion emulator remembers of pages created in databases, for
``POST /v1/databases/{id}/query``.

The query is served for the filters our connector sends (and a person would write for
the same question): no filter, a ``created_time`` timestamp filter (``on_or_after``,
``after``, ``on_or_before``, ``before``), a ``rich_text`` property filter (``equals``,
``is_not_empty``, ``is_empty``), and an ``and`` of those; sorts by ``created_time``.
Anything else is refused with Notion's ``validation_error``. As on Notion, creation
times are kept to the minute, pages are ``page_size`` long (at most 100) and chained by
``next_cursor``/``has_more``, and rich text comes back with its ``plain_text``.
``index_lag`` holds new pages out of queries for a while. Bounded: pages per database,
databases overall.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ._scoped_log import ScopedLog, page_start, page_token

__all__ = ["PAGES_PER_DATABASE", "NotionPages", "QueryError", "notion_query", "page_filter"]

PAGES_PER_DATABASE = 1_000
MAX_DATABASES = 200
# Of each page: at most this many text properties, names and texts cut to these lengths.
KEPT_PROPERTIES = 4
KEPT_NAME = 100
KEPT_TEXT = 2_000
MAX_PAGE = 100
_TIME_TESTS: dict[str, Callable[[float, float], bool]] = {
    "on_or_after": lambda created, bound: created >= bound,
    "after": lambda created, bound: created > bound,
    "on_or_before": lambda created, bound: created <= bound,
    "before": lambda created, bound: created < bound,
}
_TEXT_TESTS: dict[str, Callable[[str, Any], bool]] = {
    "equals": lambda text, value: text == value,
    "is_not_empty": lambda text, value: bool(text),
    "is_empty": lambda text, value: not text,
}

Page = dict[str, Any]


class QueryError(ValueError):
    """A query outside the emulated subset; the message is Notion's kind of answer."""


def _minute(moment: float) -> float:
    return moment - moment % 60


def _timestamp(value: Any) -> float:
    if not isinstance(value, str):
        raise QueryError("body.filter.created_time should be a date string.")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"body.filter.created_time: {value[:40]!r} is not a date.") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _plain(items: Any) -> str:
    if not isinstance(items, list):
        return ""
    return "".join(
        str((item.get("text") or {}).get("content", "")) for item in items if isinstance(item, dict)
    )


def page_filter(given: Any) -> Callable[[Page], bool]:
    """The test a query's ``filter`` puts to each page.

    Raises:
        QueryError: a filter outside the emulated subset.
    """
    if given is None:
        return lambda page: True
    if not isinstance(given, dict):
        raise QueryError("body.filter should be an object.")
    if "and" in given:
        parts = given["and"]
        if not isinstance(parts, list) or len(given) != 1:
            raise QueryError("body.filter.and should be an array.")
        tests = [page_filter(part) for part in parts]
        return lambda page: all(test(page) for test in tests)
    when = given.get("created_time")
    if given.get("timestamp") == "created_time" and isinstance(when, dict) and len(when) == 1:
        ((test_name, value),) = when.items()
        time_test = _TIME_TESTS.get(test_name)
        if time_test is None:
            raise QueryError("body.filter.created_time should hold one date condition.")
        bound = _timestamp(value)
        return lambda page: time_test(_minute(page["created"]), bound)
    name, condition = given.get("property"), given.get("rich_text")
    if isinstance(name, str) and isinstance(condition, dict) and len(condition) == 1:
        ((test_name, value),) = condition.items()
        text_test = _TEXT_TESTS.get(test_name)
        if text_test is not None:
            return lambda page: text_test(_plain(page["properties"].get(name, {}).get("rich_text")), value)
    raise QueryError("body.filter is not a filter the emulator serves.")


class NotionPages:
    def __init__(
        self, *, per_database: int = PAGES_PER_DATABASE, max_databases: int = MAX_DATABASES
    ) -> None:
        self._pages = ScopedLog(per_scope=per_database, max_scopes=max_databases)
        # Seconds before a created page shows in queries.
        self.index_lag = 0.0

    def add(self, tenant: str, database: str, page: Page) -> None:
        """Remember a page created in ``database`` (as ``pages.create`` answered it). Only
        what queries read is kept, bounded: its id, url and creation time, and its first
        title and rich-text values (see ``KEPT_*``), so that memory stays bounded."""
        kept: dict[str, Any] = {}
        parent = "data_source_id" if page["parent"].get("type") == "data_source_id" else "database_id"
        for name, value in page["properties"].items():
            kind = next((k for k in ("title", "rich_text") if isinstance(value.get(k), list)), None)
            if kind is None or len(name) > KEPT_NAME:
                continue
            kept[name] = {kind: [{"type": "text", "text": {"content": _plain(value[kind])[:KEPT_TEXT]}}]}
            if len(kept) == KEPT_PROPERTIES:
                break
        self._pages.add((tenant, _database_key(database)), {
            "object": "page", "id": page["id"], "url": page["url"], "created_time": page["created_time"],
            "parent": {"type": parent, parent: database}, "archived": False,
            "properties": kept, "created": time.time(),
        })  # fmt: skip

    def query(self, tenant: str, database: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One page of a database query's answer.

        Raises:
            QueryError: a filter, sort, size or cursor outside the emulated subset.
        """
        test = page_filter(body.get("filter"))
        newest_first = _newest_first(body.get("sorts"))
        size = body.get("page_size", MAX_PAGE)
        if not isinstance(size, int) or not 1 <= size <= MAX_PAGE:
            raise QueryError("body.page_size should be an integer from 1 to 100.")
        try:
            start = page_start(body.get("start_cursor"))
        except ValueError:
            raise QueryError("body.start_cursor should be a valid cursor.") from None
        shown_by = time.time() - self.index_lag
        pages = [
            page
            for page in self._pages.entries((tenant, _database_key(database)))
            if page["created"] <= shown_by and test(page)
        ]
        if newest_first:
            pages.reverse()
        chosen = pages[start : start + size]
        has_more = start + size < len(pages)
        return {
            "object": "list",
            "results": [_shown(page) for page in chosen],
            "next_cursor": page_token(start + size) if has_more else None,
            "has_more": has_more,
            "type": "page_or_database",
            "page_or_database": {},
        }

    def clear(self) -> None:
        self._pages.clear()


def _database_key(database: str) -> str:
    return database.replace("-", "").lower()


def _newest_first(sorts: Any) -> bool:
    if sorts is None:
        return False
    if (
        not isinstance(sorts, list)
        or len(sorts) != 1
        or not isinstance(sorts[0], dict)
        or sorts[0].get("timestamp") != "created_time"
        or sorts[0].get("direction") not in ("ascending", "descending")
    ):
        raise QueryError("body.sorts: the emulator sorts by created_time only.")
    return sorts[0]["direction"] == "descending"


def _shown(page: Page) -> Page:
    """A stored page as a query shows it: rich text with its ``plain_text``."""
    properties = {}
    for name, value in page["properties"].items():
        shown = dict(value) if isinstance(value, dict) else {}
        for kind in ("title", "rich_text"):
            if isinstance(shown.get(kind), list):
                shown["type"] = kind
                shown[kind] = [
                    {**item, "plain_text": _plain([item])} for item in shown[kind] if isinstance(item, dict)
                ]
        properties[name] = shown
    kept = {key: value for key, value in page.items() if key != "created"}
    return {**kept, "properties": properties}


def notion_query(pages: NotionPages, tenant: str, database: str, data: Any) -> web.Response:
    """``POST /v1/databases/{database}/query``."""
    if database.replace("-", "").startswith("00000000"):
        return _refused(404, "object_not_found", f"Could not find database with ID: {database}.")
    try:
        answer = pages.query(tenant, database, data if isinstance(data, dict) else {})
    except QueryError as exc:
        return _refused(400, "validation_error", str(exc))
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _refused(status: int, code: str, message: str) -> web.Response:
    body = {"object": "error", "status": status, "code": code, "message": message}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
