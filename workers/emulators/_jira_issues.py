"""What the Jira emulator remembers of created issues, for ``/rest/api/3/search/jql``.

The enhanced search is served for the JQL our connector sends (and a person would type
for the same question): ``project = KEY``, optionally ``AND created >= "-15m"``
(a relative time in minutes, hours, days or weeks), optionally ``ORDER BY created
ASC|DESC``; anything else is refused as Jira refuses JQL it cannot parse. Pages are
``maxResults`` long (at most 100 here) and chained by an opaque ``nextPageToken``,
which, as on Jira Cloud, is absent from the last page (``isLast: true``). An issue shows
``fields`` and ``properties`` only as far as the request names them. ``index_lag`` holds
new issues out of searches for a while, as Jira's index does. Bounded: issues per
project, projects overall.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ._scoped_log import ScopedLog, page_start, page_token

__all__ = ["ISSUES_PER_PROJECT", "JiraIssues", "JqlError", "Query", "jira_search", "parse_jql"]

ISSUES_PER_PROJECT = 1_000
MAX_PROJECTS = 2_000
MAX_PAGE = 100
_UNIT_SECONDS = {"m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_JQL = re.compile(
    r"""^\s*project\s*=\s*(?:"(?P<quoted>[^"]+)"|(?P<bare>[A-Za-z][A-Za-z0-9_]*))
    (?:\s+AND\s+created\s*>=\s*(?P<q>"?)-(?P<amount>\d{1,6})(?P<unit>[mhdw])(?P=q))?
    (?:\s+ORDER\s+BY\s+created(?:\s+(?P<direction>ASC|DESC))?)?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


class JqlError(ValueError):
    """JQL outside the emulated subset; the message is Jira's kind of answer."""


@dataclass(frozen=True, slots=True)
class Query:
    project: str
    created_after: float | None  # Unix seconds, or None for no bound
    newest_first: bool


def parse_jql(jql: str, *, now: float | None = None) -> Query:
    """The emulated subset of JQL.

    Raises:
        JqlError: anything else.
    """
    match = _JQL.match(jql)
    if match is None:
        raise JqlError(f"Error in the JQL Query: the emulator cannot parse '{jql[:200]}'.")
    after = None
    if match["amount"] is not None:
        seconds = int(match["amount"]) * _UNIT_SECONDS[match["unit"].lower()]
        after = (time.time() if now is None else now) - seconds
    return Query(
        project=match["quoted"] or match["bare"],
        created_after=after,
        newest_first=(match["direction"] or "ASC").upper() == "DESC",
    )


class JiraIssues:
    def __init__(
        self, *, per_project: int = ISSUES_PER_PROJECT, max_projects: int = MAX_PROJECTS
    ) -> None:
        self._issues = ScopedLog(per_scope=per_project, max_scopes=max_projects)
        # Seconds before a created issue shows in searches (Jira's index trails its writes).
        self.index_lag = 0.0

    def add(
        self, tenant: str, project: str, issue: dict[str, Any], properties: Mapping[str, Any]
    ) -> None:
        """Remember a created issue (``{id, key, self}``) with its entity properties."""
        self._issues.add(
            (tenant, project),
            {**issue, "created": time.time(), "properties": dict(properties)},
        )

    def search(
        self, tenant: str, query: Query, *, token: str | None, max_results: int,
        fields: list[str], properties: list[str],
    ) -> dict[str, Any]:  # fmt: skip
        """One page of the enhanced search's answer.

        Raises:
            JqlError: an unknown page token.
        """
        try:
            start = page_start(token)
        except ValueError:
            raise JqlError("The nextPageToken is invalid.") from None
        indexed_by = time.time() - self.index_lag
        issues = [
            issue
            for issue in self._issues.entries((tenant, query.project))
            if (query.created_after is None or issue["created"] >= query.created_after)
            and issue["created"] <= indexed_by
        ]
        if query.newest_first:
            issues.reverse()
        size = max(1, min(MAX_PAGE, max_results))
        page = [_shown(issue, fields, properties) for issue in issues[start : start + size]]
        answer: dict[str, Any] = {"issues": page, "isLast": start + size >= len(issues)}
        if not answer["isLast"]:
            answer["nextPageToken"] = page_token(start + size)
        return answer

    def clear(self) -> None:
        self._issues.clear()


def _shown(issue: Mapping[str, Any], fields: list[str], properties: list[str]) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": issue["id"], "key": issue["key"], "self": issue["self"]}
    if "created" in fields or "*all" in fields:
        created = datetime.fromtimestamp(issue["created"], UTC)
        shown["fields"] = {"created": created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"}
    else:
        shown["fields"] = {}
    kept = {name: issue["properties"][name] for name in properties if name in issue["properties"]}
    if kept:
        shown["properties"] = kept
    return shown


def jira_search(issues: JiraIssues, tenant: str, request: web.Request, data: Any) -> web.Response:
    """``GET`` (query string) or ``POST`` (JSON body) ``/rest/api/3/search/jql``."""
    if request.method == "GET":
        query = request.query
        params: dict[str, Any] = {
            "jql": query.get("jql"),
            "nextPageToken": query.get("nextPageToken"),
            "maxResults": query.get("maxResults"),
            "fields": [f for f in query.get("fields", "").split(",") if f],
            "properties": [p for p in query.get("properties", "").split(",") if p],
        }
    elif isinstance(data, dict):
        params = data
    else:
        return _refused("The request body must be a JSON object.")
    jql, fields, properties = params.get("jql"), params.get("fields") or [], params.get("properties") or []
    if not isinstance(jql, str) or not jql.strip():
        return _refused("Unbounded JQL queries are not allowed here. Please add a search restriction.")
    if not (_strings(fields) and _strings(properties)) or len(properties) > 5:
        return _refused("fields and properties must be lists of names (at most 5 properties).")
    try:
        max_results = int(params.get("maxResults") or 50)
        wanted = parse_jql(jql)
        if wanted.project.upper().startswith("MISSING"):
            return _refused(f"The value '{wanted.project}' does not exist for the field 'project'.")
        page = issues.search(
            tenant, wanted, token=params.get("nextPageToken"), max_results=max_results,
            fields=fields, properties=properties,
        )  # fmt: skip
    except (JqlError, ValueError, TypeError) as exc:
        return _refused(str(exc) if isinstance(exc, JqlError) else "maxResults must be a number.")
    return web.Response(body=orjson.dumps(page), content_type="application/json")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _refused(message: str) -> web.Response:
    body = {"errorMessages": [message], "errors": {}}
    return web.Response(status=400, body=orjson.dumps(body), content_type="application/json")
