"""GitHub: create an issue (``POST /repos/{owner}/{repo}/issues``).

GitHub signals rate limits with 429 or 403, with ``Retry-After``, with
``x-ratelimit-remaining: 0`` or (a secondary limit) only in its message; each is
retryable here, after the wait GitHub asks for (:func:`github_rate_limit`).

Side effects: GitHub takes no idempotency key. Each issue's body ends with ours in an
HTML comment (invisible when rendered), and before opening an issue again after an
attempt whose outcome is unknown the runtime asks :meth:`GitHubConnector.find_done`,
which lists the repository's issues back to the command's submission (newest first, at
most :data:`MAX_PAGES` pages of 100) for it. ``Idempotency-Key`` is sent too (GitHub
ignores it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from yarl import URL

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import (
    MAX_RETRY_AFTER,
    Connector,
    ConnectorCall,
    Doubt,
    Operation,
    maybe,
    output_schema,
    parse_retry_after,
)
from ._http import Reply, raise_for_status, send
from ._shared_reads import READ_LIMIT, Found, SharedReads, for_reads, output_for

__all__ = ["GitHubConnector", "github_rate_limit", "marker"]

MAX_PAGES = 5
# GitHub: with neither Retry-After nor x-ratelimit-remaining: 0, wait at least a minute.
_UNSAID_WAIT = 60.0
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
# Only the marker that ends a body counts (ours is always last); markers a caller puts in
# a body are removed before it is sent, so a copied body cannot pass for another issue.
_MARKER = re.compile(r"<!-- switchyard:idempotency-key=([A-Za-z0-9_-]{1,128}) -->\s*\Z")
_ANY_MARKER = re.compile(r"<!-- switchyard:idempotency-key=[^>]*-->")


def marker(idempotency_key: str) -> str:
    """The line that ends the body of an issue we open: what ``find_done`` looks for."""
    return f"<!-- switchyard:idempotency-key={idempotency_key} -->"

CREATE_ISSUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "owner": {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$"},
        "repo": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,100}$"},
        "title": {"type": "string", "minLength": 1, "maxLength": 256},
        # GitHub's 65,536 characters, less room for the marker appended (see _marker).
        "body": {"type": "string", "maxLength": 65_536 - 128},
        "labels": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "string", "minLength": 1, "maxLength": 50},
        },
    },
    "required": ["owner", "repo", "title"],
    "additionalProperties": False,
}


def github_rate_limit(
    status: int, headers: Mapping[str, str], *, what: str, body: bytes = b"", now: float | None = None
) -> RetryableError | None:
    """The retryable error for a GitHub rate limit, or None for any other answer (a 403
    without one is a permission refusal).

    Primary and secondary limits come as 403 or 429. GitHub's rule for the wait: its
    ``Retry-After`` when given; else, with ``x-ratelimit-remaining: 0``, until
    ``x-ratelimit-reset``; else at least a minute (a secondary limit may say so only in
    its message).
    """
    if status not in (403, 429):
        return None
    delay = parse_retry_after(headers.get("Retry-After"))
    if delay is None and headers.get("x-ratelimit-remaining") == "0":
        try:
            reset = float(headers.get("x-ratelimit-reset", ""))
        except ValueError:
            reset = None
        if reset is not None:
            delay = min(MAX_RETRY_AFTER, max(0.0, reset - (time.time() if now is None else now)))
    elif delay is None and status == 403 and b"rate limit" not in body.lower():
        return None
    return RetryableError(
        ErrorCode.UPSTREAM_RATE_LIMITED,
        f"{what}: {status} rate limited",
        retry_after=_UNSAID_WAIT if delay is None else delay,
        http_status=status,
    )


ISSUE_SCHEMA = output_schema(
    {
        "number": maybe("integer", "The issue's number in its repository."),
        "html_url": maybe("string", "The issue's page."),
        "id": maybe("integer", "The issue's ID."),
        "labels": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The labels GitHub applied (it drops those the token may not set).",
        },
    },
    "number",
    "html_url",
    "id",
    "labels",
)


class GitHubConnector(Connector):
    name: ClassVar[str] = "github"
    credential_shapes: ClassVar[tuple[frozenset[str], ...]] = (frozenset({"token"}), frozenset({"access_token"}))
    default_base_url: ClassVar[str] = "https://api.github.com"
    operations: ClassVar[dict[str, Operation]] = {
        "issues.create": Operation(
            description="Open an issue in a GitHub repository.",
            input_schema=CREATE_ISSUE_SCHEMA,
            output_schema=ISSUE_SCHEMA,
            destructive=False,  # it creates; nothing already there changes
        )
    }
    finds_done: ClassVar[bool] = True

    def __init__(self) -> None:
        self.reads = 0  # issue list pages read (for tests and the curious)
        self._shared = SharedReads()

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        """The output (:func:`_output`) of an issue an earlier attempt opened, or None."""
        args = validated(self, call)
        token = credential(call, "token", "access_token", connector=self.name)
        owner, repo = args["owner"], args["repo"]
        reader = for_reads(call)
        found = await self._shared.found(
            (call.tenant_id, owner.lower(), repo.lower()),
            doubt,
            lambda oldest: self._read_issues(reader, token, owner, repo, oldest),
        )
        return output_for(found, call)

    async def _read_issues(
        self, call: ConnectorCall, token: str, owner: str, repo: str, oldest: float
    ) -> Found:
        what = "github issues.list"
        url: URL | None = URL(_issues_url(call, owner, repo)).with_query({
            "state": "all", "sort": "created", "direction": "desc", "per_page": "100",
            "since": datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })  # fmt: skip
        found: Found = {}
        for _ in range(MAX_PAGES):
            if url is None:
                break
            self.reads += 1
            reply = await send(call, "GET", url, what=what, headers=_headers(token), limit=READ_LIMIT)
            page = _checked(reply, what)
            if not isinstance(page, list):
                raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: unexpected response")
            for issue in page:
                body = issue.get("body") if isinstance(issue, dict) else None
                match = _MARKER.search(body) if isinstance(body, str) else None
                if match is not None:
                    found.setdefault(match.group(1), _output(issue))
            url = _next_page(reply, url)
        return found

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Open the issue; returns ``{number, html_url, id, labels}`` (see :func:`_output`).

        Raises:
            CredentialsExpired: 401.
            RetryableError: 429, 403 rate limits, 5xx, timeouts, connection errors.
            PermanentError: other 4xx (404 unknown repo, 410 issues off, 422), bad arguments.
        """
        args = validated(self, call)
        what = "github issues.create"
        token = credential(call, "token", "access_token", connector=self.name)
        body: dict[str, Any] = {"title": args["title"]}
        text = _ANY_MARKER.sub("", str(args.get("body") or "")).rstrip()
        body["body"] = f"{text}\n\n{marker(call.idempotency_key)}" if text else marker(call.idempotency_key)
        if args.get("labels"):
            body["labels"] = list(args["labels"])
        reply = await send(
            call,
            "POST",
            _issues_url(call, args["owner"], args["repo"]),
            what=what,
            headers=_headers(token),
            json_body=body,
        )
        data = _checked(reply, what)
        if not isinstance(data, dict) or "number" not in data:
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: response has no number")
        return _output(data)


def _issues_url(call: ConnectorCall, owner: str, repo: str) -> str:
    return f"{call.base_url.rstrip('/')}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/issues"


def _output(issue: Mapping[str, Any]) -> dict[str, Any]:
    """An issue as the command's output: ``{number, html_url, id, labels}``. ``labels``
    are those GitHub applied: it drops, silently, those a token without push access asks
    for ("Only users with push access can set labels for new issues")."""
    labels = issue.get("labels")
    applied = [
        item["name"] for item in (labels if isinstance(labels, list) else [])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    ]  # fmt: skip
    return {"number": issue.get("number"), "html_url": issue.get("html_url"), "id": issue.get("id"), "labels": applied}


def _headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }


def _checked(reply: Reply, what: str) -> Any:
    """The JSON of a successful reply; raises our error for a failed one."""
    limited = github_rate_limit(reply.status, reply.headers, what=what, body=reply.body)
    if limited is not None:
        raise limited
    raise_for_status(reply, what)
    return reply.json(what)


def _next_page(reply: Reply, current: URL) -> URL | None:
    """The ``Link: rel="next"`` page, only on the API's own origin (a header must not
    send the token elsewhere)."""
    match = _NEXT.search(reply.headers.get("Link", ""))
    if match is None:
        return None
    try:
        following = current.join(URL(match.group(1)))
        return following if following.origin() == current.origin() else None
    except ValueError:
        return None
