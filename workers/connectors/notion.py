"""Notion: create a page under a page or a database (``POST /v1/pages``).

Plain-text ``content`` becomes paragraph blocks: one per blank-line separated
paragraph, each rich-text item at most 2,000 characters, at most 100 blocks per
request (Notion's documented request limits).

Side effects: Notion takes no idempotency key; a retry after an ambiguous failure may
create a second page. ``Idempotency-Key`` is sent (Notion ignores it).
"""

from __future__ import annotations

from typing import Any, ClassVar

from core.errors import PermanentError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import Connector, ConnectorCall, Operation
from ._http import raise_for_status, send

__all__ = ["NOTION_VERSION", "NotionConnector", "paragraph_blocks"]

NOTION_VERSION = "2022-06-28"
_TEXT_LIMIT = 2_000
_MAX_BLOCKS = 100
_MAX_RICH_TEXT = 100
_ID = {"type": "string", "pattern": r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$"}

CREATE_PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "parent_page_id": {**_ID, "description": "Create the page under this page."},
        "database_id": {**_ID, "description": "Create the page as a row of this database."},
        "title": {"type": "string", "minLength": 1, "maxLength": _TEXT_LIMIT},
        "content": {"type": "string", "maxLength": 200_000, "description": "Plain-text body."},
        "title_property": {
            "type": "string",
            "maxLength": 100,
            "description": "Title property of the database (default 'Name').",
        },
    },
    "required": ["title"],
    "oneOf": [{"required": ["parent_page_id"]}, {"required": ["database_id"]}],
    "additionalProperties": False,
}


def _rich_text(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": {"content": text[start : start + _TEXT_LIMIT]}}
        for start in range(0, len(text), _TEXT_LIMIT)
    ]


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


class NotionConnector(Connector):
    name: ClassVar[str] = "notion"
    default_base_url: ClassVar[str] = "https://api.notion.com"
    operations: ClassVar[dict[str, Operation]] = {
        "pages.create": Operation(
            description="Create a Notion page with a title and plain-text content.",
            input_schema=CREATE_PAGE_SCHEMA,
        )
    }

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Create the page; returns ``{id, url}``.

        Raises:
            CredentialsExpired: 401.
            RetryableError: 429, 5xx, timeouts, connection errors.
            PermanentError: other 4xx, bad arguments, missing token.
        """
        args = validated(self, call)
        what = "notion pages.create"
        token = credential(call, "token", "access_token", connector=self.name)
        title = [{"type": "text", "text": {"content": args["title"]}}]
        if "parent_page_id" in args:
            parent = {"type": "page_id", "page_id": args["parent_page_id"]}
            # Under a page the only valid property is the title, keyed "title".
            properties: dict[str, Any] = {"title": {"title": title}}
        else:
            parent = {"type": "database_id", "database_id": args["database_id"]}
            properties = {args.get("title_property") or "Name": {"title": title}}
        body: dict[str, Any] = {"parent": parent, "properties": properties}
        try:
            children = paragraph_blocks(args.get("content", ""))
        except ValueError as exc:
            raise PermanentError(ErrorCode.INVALID_ARGUMENTS, f"{what}: {exc}") from exc
        if children:
            body["children"] = children
        reply = await send(
            call,
            "POST",
            f"{call.base_url.rstrip('/')}/v1/pages",
            what=what,
            headers={
                "Authorization": f"Bearer {token}",
                "Notion-Version": NOTION_VERSION,
                "Accept": "application/json",
            },
            json_body=body,
        )
        raise_for_status(reply, what)
        data = reply.json(what)
        if not isinstance(data, dict) or "id" not in data:
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: response has no id")
        return {"id": data["id"], "url": data.get("url")}
