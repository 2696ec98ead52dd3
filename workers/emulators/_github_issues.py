"""What the GitHub emulator remembers of opened issues, for ``GET /repos/{owner}/{repo}/issues``.

Listed as GitHub lists them: ``state``, ``sort=created``, ``direction``, ``since``
(updated at or after), ``per_page`` (up to 100) and ``page``, with a ``Link`` header
for the next page. Bounded: issues per repository, repositories overall.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._scoped_log import ScopedLog

__all__ = ["IssueLog"]

ISSUES_PER_REPO = 1_000
MAX_REPOS = 2_000


class IssueLog:
    def __init__(self, *, per_repo: int = ISSUES_PER_REPO, max_repos: int = MAX_REPOS) -> None:
        self._issues = ScopedLog(per_scope=per_repo, max_scopes=max_repos)

    def add(self, tenant: str, owner: str, repo: str, issue: dict[str, Any]) -> None:
        self._issues.add((tenant, owner.lower(), repo.lower()), issue)

    def listed(
        self, tenant: str, owner: str, repo: str, *, state: str, since: datetime | None,
        newest_first: bool, page: int, per_page: int,
    ) -> tuple[list[dict[str, Any]], bool]:  # fmt: skip
        """One page of the repository's issues, and whether another follows."""
        issues = [
            issue
            for issue in self._issues.entries((tenant, owner.lower(), repo.lower()))
            if state in ("all", issue["state"])
            and (since is None or datetime.fromisoformat(issue["updated_at"]) >= since)
        ]
        if newest_first:
            issues.reverse()
        start = (page - 1) * per_page
        return issues[start : start + per_page], start + per_page < len(issues)

    def clear(self) -> None:
        self._issues.clear()
