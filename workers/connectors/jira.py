"""Jira Cloud: create an issue (``POST /rest/api/3/issue``).

REST v3 takes the description as an Atlassian Document Format (ADF) document;
:func:`adf_document` turns plain text into paragraphs with hard breaks. Credentials are
either an API token, ``{email, api_token, site_url}`` (basic auth at
``https://<site>.atlassian.net``; a 401 fails the command), or an OAuth 2.0 (3LO) grant,
``{access_token, refresh_token, client_id, client_secret, cloud_id, expires_at?}``
(scopes ``write:jira-work read:jira-work offline_access``). Atlassian answers 3LO
tokens only through its gateway, ``https://api.atlassian.com/ex/jira/<cloud_id>``, and
they last an hour: the runtime refreshes them at Atlassian's token endpoint on expiry or
a 401 and stores the rotated refresh token back in Vault, as for Gmail.

Side effects: Jira takes no idempotency key. Each issue is created with our key in an
issue entity property (:data:`PROPERTY`, invisible in Jira's UI; callers cannot set
properties), and before creating an issue again after an attempt whose outcome is unknown
the runtime asks :meth:`JiraConnector.find_done`, which searches the project's issues
created since the command's submission (the enhanced JQL search, newest first, at most
:data:`MAX_PAGES` pages of 100) for it. Jira's search index trails its writes (the
enhanced search is eventually consistent), so a search counts only when it begins
:data:`INDEX_LAG` seconds after the last attempt in doubt was sent; the check waits for
that. The search needs the ``read:jira-work`` scope (OAuth) and the Browse projects
permission; a 401 or 403 from it makes the check give up and the issue is created as
before. ``Idempotency-Key`` is sent too (Jira ignores it).
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from core.errors import PermanentError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import (
    Connector,
    ConnectorCall,
    CredentialsExpired,
    Doubt,
    Operation,
    maybe,
    output_schema,
)
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
from .oauth import expired

__all__ = ["PROPERTY", "JiraConnector", "adf_document"]

# The issue entity property that carries our idempotency key: {"idempotency_key": key}.
PROPERTY = "switchyard"
# Where 3LO tokens are answered: the gateway, per Jira site (its cloud id, a UUID).
GATEWAY = "https://api.atlassian.com/ex/jira"
_CLOUD_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_PAGES = 5
PAGE_SIZE = 100
# Seconds by which a search must begin after the attempts in doubt were sent, so that the
# issues they created are in Jira's search index (typically within a few seconds).
INDEX_LAG = 5.0

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


ISSUE_SCHEMA = output_schema(
    {
        "id": maybe("string", "The issue's ID."),
        "key": maybe("string", "The issue's key (PROJ-123)."),
        "self": maybe("string", "The issue's REST API URL."),
    },
    "id",
    "key",
    "self",
)


class JiraConnector(Connector):
    name: ClassVar[str] = "jira"
    credential_shapes: ClassVar[tuple[frozenset[str], ...]] = (
        frozenset({"email", "api_token", "site_url"}),
        frozenset({"access_token", "cloud_id"}),
    )
    # Where the site is: not needed when the deployment sends every connector to one base
    # URL (the emulators).
    credential_locators: ClassVar[frozenset[str]] = frozenset({"site_url", "cloud_id"})
    # Jira Cloud lives at each customer's own site; the runtime must pass a base URL
    # (credentials may carry ``site_url``, which wins over this placeholder).
    default_base_url: ClassVar[str] = "https://your-domain.atlassian.net"
    # OAuth 2.0 (3LO) grants are refreshed; API tokens are not (see _refused).
    oauth: ClassVar[bool] = True
    default_token_url: ClassVar[str] = "https://auth.atlassian.com/oauth/token"
    token_request_json: ClassVar[bool] = True  # as Atlassian's "Refresh tokens" page sends it
    operations: ClassVar[dict[str, Operation]] = {
        "issues.create": Operation(
            description="Create a Jira issue with a summary and a plain-text description.",
            input_schema=CREATE_ISSUE_SCHEMA,
            output_schema=ISSUE_SCHEMA,
            destructive=False,  # it creates; nothing already there changes
        )
    }

    finds_done: ClassVar[bool] = True

    def __init__(self, *, index_lag: float = INDEX_LAG) -> None:
        self.reads = 0  # search pages read (for tests and the curious)
        self.index_lag = index_lag
        self._shared = SharedReads()

    def _site(self, call: ConnectorCall) -> str:
        """The API root: the runtime's base URL or, when the runtime left the placeholder,
        Atlassian's gateway for an OAuth grant's ``cloud_id``, else ``site_url``."""
        if call.base_url != self.default_base_url:
            return call.base_url.rstrip("/")
        cloud_id, site = call.credentials.get("cloud_id"), call.credentials.get("site_url")
        if isinstance(cloud_id, str) and _CLOUD_ID.fullmatch(cloud_id):
            return f"{GATEWAY}/{cloud_id}"
        if isinstance(site, str) and site:
            return site.rstrip("/")
        return call.base_url.rstrip("/")

    @staticmethod
    def _authorization(call: ConnectorCall, what: str) -> str:
        if call.credentials.get("api_token"):
            email = credential(call, "email", connector="jira")
            token = credential(call, "api_token", connector="jira")
            pair = base64.b64encode(f"{email}:{token}".encode()).decode("ascii")
            return f"Basic {pair}"
        token = credential(call, "access_token", connector="jira")
        if expired(call.credentials, leeway=0):  # skip a doomed round trip: refreshed first
            raise CredentialsExpired(f"{what}: access token expired")
        return f"Bearer {token}"

    @staticmethod
    def _refused(call: ConnectorCall, exc: CredentialsExpired) -> PermanentError:
        """A 401: an OAuth token is refreshed (the runtime's answer to CredentialsExpired);
        an API token cannot be, so the command fails at once."""
        if call.credentials.get("api_token"):
            return PermanentError(ErrorCode.CREDENTIALS_INVALID, f"{exc} (API token refused)", http_status=401)
        return exc

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
        mark = {"key": PROPERTY, "value": {"idempotency_key": call.idempotency_key}}
        reply = await send(
            call,
            "POST",
            f"{self._site(call)}/rest/api/3/issue",
            what=what,
            headers={"Authorization": self._authorization(call, what), "Accept": "application/json"},
            json_body={"fields": fields, "properties": [mark]},
        )
        try:
            raise_for_status(reply, what)
        except CredentialsExpired as exc:
            raise self._refused(call, exc) from None
        data = reply.json(what)
        if not isinstance(data, dict) or "key" not in data:
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: response has no key")
        return _output(data)

    def check_wait(self, doubt: Doubt) -> float:
        return index_wait(doubt, self.index_lag)

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        """The ``{id, key, self}`` of an issue an earlier attempt created, or None."""
        args = validated(self, call)
        site, project = self._site(call), args["project_key"]
        reader = for_reads(call)
        doubt = await indexed(doubt, self.index_lag)
        found = await self._shared.found(
            (call.tenant_id, site, project),
            doubt,
            lambda oldest: self._search(reader, site, project, oldest),
        )
        return output_for(found, call)

    async def _search(self, call: ConnectorCall, site: str, project: str, oldest: float) -> Found:
        what = "jira search"
        # Relative JQL time: Jira reads absolute dates in the searching user's time zone.
        minutes = max(1, math.ceil((time.time() - oldest) / 60) + 1)
        query: dict[str, Any] = {
            "jql": f'project = "{project}" AND created >= "-{minutes}m" ORDER BY created DESC',
            "fields": ["created"], "properties": [PROPERTY], "maxResults": PAGE_SIZE,
        }  # fmt: skip
        headers = {"Authorization": self._authorization(call, what), "Accept": "application/json"}
        found: Found = {}
        for _ in range(MAX_PAGES):
            self.reads += 1
            reply = await send(
                call, "POST", f"{site}/rest/api/3/search/jql", what=what,
                headers=headers, json_body=query, limit=READ_LIMIT,
            )  # fmt: skip
            if reply.status in (401, 403):  # no read scope or permission: act as before
                raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: {reply.status} refused")
            page, issues = listed_page(reply, what, "issues")
            for issue in issues:
                key = _marked_key(issue)
                if key is not None:
                    found.setdefault(key, _output(issue))
            following = page.get("nextPageToken")
            # Jira Cloud leaves nextPageToken out of the last page; isLast may be absent.
            if page.get("isLast") is True or not isinstance(following, str) or not following:
                break
            query["nextPageToken"] = following
        return found


def _marked_key(issue: Any) -> str | None:
    """Our idempotency key in an issue's :data:`PROPERTY`, if it has one."""
    properties = issue.get("properties") if isinstance(issue, dict) else None
    value = properties.get(PROPERTY) if isinstance(properties, dict) else None
    key = value.get("idempotency_key") if isinstance(value, dict) else None
    return key if isinstance(key, str) and key else None


def _output(issue: Mapping[str, Any]) -> dict[str, Any]:
    """An issue as the command's output: ``{id, key, self}``."""
    return {"id": issue.get("id"), "key": issue.get("key"), "self": issue.get("self")}
