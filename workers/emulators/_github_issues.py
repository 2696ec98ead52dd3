"""What the GitHub emulator remembers of opened issues, for ``GET /repos/{owner}/{repo}/issues``.

Listed as GitHub lists them: ``state``, ``sort=created``, ``direction``, ``since``
(updated at or after), ``per_page`` (up to 100) and ``page``, with a ``Link`` header
for the next page. Bounded: issues per repository, repositories overall.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime
from typing import Any

__all__ = ["IssueLog"]

ISSUES_PER_REPO = 1_000
MAX_REPOS = 2_000


class IssueLog:
    def __init__(self, *, per_repo: int = ISSUES_PER_REPO, max_repos: int = MAX_REPOS) -> None:
        self._per_repo = per_repo
        self._max_repos = max_repos
        self._issues: OrderedDict[tuple[str, str, str], deque[dict[str, Any]]] = OrderedDict()

    def add(self, tenant: str, owner: str, repo: str, issue: dict[str, Any]) -> None:
        key = (tenant, owner.lower(), repo.lower())
        issues = self._issues.get(key)
        if issues is None:
            issues = self._issues[key] = deque(maxlen=self._per_repo)
            if len(self._issues) > self._max_repos:
                self._issues.popitem(last=False)
        else:
            self._issues.move_to_end(key)
        issues.append(issue)

    def listed(
        self, tenant: str, owner: str, repo: str, *, state: str, since: datetime | None,
        newest_first: bool, page: int, per_page: int,
    ) -> tuple[list[dict[str, Any]], bool]:  # fmt: skip
        """One page of the repository's issues, and whether another follows."""
        issues = [
            issue
            for issue in self._issues.get((tenant, owner.lower(), repo.lower()), ())
            if state in ("all", issue["state"])
            and (since is None or datetime.fromisoformat(issue["updated_at"]) >= since)
        ]
        if newest_first:
            issues.reverse()
        start = (page - 1) * per_page
        return issues[start : start + per_page], start + per_page < len(issues)

    def clear(self) -> None:
        self._issues.clear()
