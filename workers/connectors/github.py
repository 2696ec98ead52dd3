"""GitHub: create an issue (``POST /repos/{owner}/{repo}/issues``).

GitHub signals rate limits with 429, or with 403 plus ``Retry-After`` or
``x-ratelimit-remaining: 0``; both are retryable here (:func:`github_rate_limit`).

Side effects: GitHub takes no idempotency key; a retry after an ambiguous failure may
open a second issue. ``Idempotency-Key`` is sent (GitHub ignores it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import Connector, ConnectorCall, Operation, parse_retry_after
from ._http import raise_for_status, send

__all__ = ["GitHubConnector", "github_rate_limit"]

CREATE_ISSUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "owner": {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$"},
        "repo": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,100}$"},
        "title": {"type": "string", "minLength": 1, "maxLength": 256},
        "body": {"type": "string", "maxLength": 65_536},
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
    status: int, headers: Mapping[str, str], *, what: str, now: float | None = None
) -> RetryableError | None:
    """The retryable error for GitHub's 403-style rate limit, or None for a real 403."""
    if status != 403:
        return None
    delay = parse_retry_after(headers.get("Retry-After"))
    if delay is None and headers.get("x-ratelimit-remaining") == "0":
        try:
            reset = float(headers.get("x-ratelimit-reset", ""))
        except ValueError:
            reset = None
        if reset is not None:
            delay = max(0.0, reset - (time.time() if now is None else now))
    elif delay is None:
        return None
    return RetryableError(
        ErrorCode.UPSTREAM_RATE_LIMITED,
        f"{what}: 403 rate limited",
        retry_after=delay,
        http_status=403,
    )


class GitHubConnector(Connector):
    name: ClassVar[str] = "github"
    default_base_url: ClassVar[str] = "https://api.github.com"
    operations: ClassVar[dict[str, Operation]] = {
        "issues.create": Operation(
            description="Open an issue in a GitHub repository.",
            input_schema=CREATE_ISSUE_SCHEMA,
        )
    }

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Open the issue; returns ``{number, html_url, id}``.

        Raises:
            CredentialsExpired: 401.
            RetryableError: 429, 403 rate limits, 5xx, timeouts, connection errors.
            PermanentError: other 4xx (404 unknown repo, 410 issues off, 422), bad arguments.
        """
        args = validated(self, call)
        what = "github issues.create"
        token = credential(call, "token", "access_token", connector=self.name)
        body: dict[str, Any] = {"title": args["title"]}
        if "body" in args:
            body["body"] = args["body"]
        if args.get("labels"):
            body["labels"] = list(args["labels"])
        owner, repo = quote(args["owner"], safe=""), quote(args["repo"], safe="")
        reply = await send(
            call,
            "POST",
            f"{call.base_url.rstrip('/')}/repos/{owner}/{repo}/issues",
            what=what,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            json_body=body,
        )
        limited = github_rate_limit(reply.status, reply.headers, what=what)
        if limited is not None:
            raise limited
        raise_for_status(reply, what)
        data = reply.json(what)
        if not isinstance(data, dict) or "number" not in data:
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: response has no number")
        return {"number": data["number"], "html_url": data.get("html_url"), "id": data.get("id")}
