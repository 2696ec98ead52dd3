"""Jira Cloud: create an issue (``POST /rest/api/3/issue``).

REST v3 takes the description as an Atlassian Document Format (ADF) document;
:func:`adf_document` turns plain text into paragraphs with hard breaks. Credentials are
``{email, api_token}`` (basic auth) or ``{access_token}`` (bearer).

Side effects: Jira takes no idempotency key; a retry after an ambiguous failure may
create a second issue. ``Idempotency-Key`` is sent (Jira ignores it).
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from core.errors import PermanentError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import Connector, ConnectorCall, Operation
from ._http import raise_for_status, send

__all__ = ["JiraConnector", "adf_document"]

CREATE_ISSUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "project_key": {"type": "string", "pattern": r"^[A-Z][A-Z0-9_]{1,9}$"},
        "summary": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^\r\n]*$"},
        "description": {"type": "string", "maxLength": 32_767},
        "issue_type": {"type": "string", "minLength": 1, "maxLength": 60, "default": "Task"},
        "labels": {
            "type": "array",
            "maxItems": 50,
            "items": {"type": "string", "pattern": r"^\S{1,255}$"},
        },
    },
    "required": ["project_key", "summary"],
    "additionalProperties": False,
}


def adf_document(text: str) -> dict[str, Any]:
    """An ADF ``doc``: blank lines split paragraphs, single newlines become hard breaks."""
    content: list[dict[str, Any]] = []
    for paragraph in text.replace("\r\n", "\n").split("\n\n"):
        nodes: list[dict[str, Any]] = []
        for line in paragraph.strip("\n").split("\n"):
            if nodes:
                nodes.append({"type": "hardBreak"})
            # ADF rejects empty text nodes.
            if line:
                nodes.append({"type": "text", "text": line})
        if any(node["type"] == "text" for node in nodes):
            content.append({"type": "paragraph", "content": nodes})
    return {"type": "doc", "version": 1, "content": content}


class JiraConnector(Connector):
    name: ClassVar[str] = "jira"
    # Jira Cloud lives at each customer's own site; the runtime must pass a base URL
    # (credentials may carry ``site_url``, which wins over this placeholder).
    default_base_url: ClassVar[str] = "https://your-domain.atlassian.net"
    operations: ClassVar[dict[str, Operation]] = {
        "issues.create": Operation(
            description="Create a Jira issue with a summary and a plain-text description.",
            input_schema=CREATE_ISSUE_SCHEMA,
        )
    }

    @staticmethod
    def _authorization(call: ConnectorCall) -> str:
        if call.credentials.get("api_token"):
            email = credential(call, "email", connector="jira")
            token = credential(call, "api_token", connector="jira")
            pair = base64.b64encode(f"{email}:{token}".encode()).decode("ascii")
            return f"Basic {pair}"
        return f"Bearer {credential(call, 'access_token', 'api_token', connector='jira')}"

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Create the issue; returns ``{id, key, self}``.

        Raises:
            CredentialsExpired: 401.
            RetryableError: 429, 5xx, timeouts, connection errors.
            PermanentError: other 4xx (e.g. unknown project), bad arguments, no credentials.
        """
        args = validated(self, call)
        what = "jira issues.create"
        fields: dict[str, Any] = {
            "project": {"key": args["project_key"]},
            "summary": args["summary"],
            "issuetype": {"name": args.get("issue_type") or "Task"},
        }
        if args.get("description"):
            fields["description"] = adf_document(args["description"])
        if args.get("labels"):
            fields["labels"] = list(args["labels"])
        base = call.base_url
        site = call.credentials.get("site_url")
        if base == self.default_base_url and isinstance(site, str) and site:
            base = site
        reply = await send(
            call,
            "POST",
            f"{base.rstrip('/')}/rest/api/3/issue",
            what=what,
            headers={"Authorization": self._authorization(call), "Accept": "application/json"},
            json_body={"fields": fields},
        )
        raise_for_status(reply, what)
        data = reply.json(what)
        if not isinstance(data, dict) or "key" not in data:
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: response has no key")
        return {"id": data.get("id"), "key": data["key"], "self": data.get("self")}
