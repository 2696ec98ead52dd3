"""Every workspace's configuration, kept as its JSON; the models in use, parsed, in an LRU.

The router's config view and each ingress's directory hold every workspace of the config
topic. Parsed, a small workspace weighs ~7 KiB (nested pydantic models, JSON Schemas)
against ~0.9 KiB of JSON: kept parsed, 100,000 workspaces would take ~700 MiB of every
router and ingress replica. Kept as the bytes they were validated from, and parsed again
(~0.1 ms) when a workspace not among the ``parsed`` most recently used is asked for, a
workspace costs its JSON and an entry.
"""

from __future__ import annotations

from schemas import WorkspaceConfig

from .lru import LRU

__all__ = ["WorkspaceStore"]

Ids = tuple[str, str]  # (tenant id, space id)


class WorkspaceStore:
    def __init__(self, parsed: int = 4_096) -> None:
        self._raw: dict[Ids, bytes] = {}
        # Past a tenth, a tenant makes room from its own: one tenant's thousands of
        # workspaces in use cannot make every other tenant's be parsed again each time.
        self._parsed: LRU[Ids, WorkspaceConfig] = LRU(parsed, owner=lambda workspace: workspace.tenant_id)

    def put(self, ids: Ids, raw: bytes, workspace: WorkspaceConfig) -> None:
        """Keep ``workspace``, validated from ``raw`` by the caller."""
        self._raw[ids] = raw
        self._parsed.put(ids, workspace)

    def pop(self, ids: Ids) -> None:
        self._raw.pop(ids, None)
        self._parsed.pop(ids)

    def get(self, ids: Ids) -> WorkspaceConfig | None:
        workspace = self._parsed.get(ids)
        if workspace is None:
            raw = self._raw.get(ids)
            if raw is None:
                return None
            workspace = WorkspaceConfig.from_bytes(raw)  # valid: it was when put
            self._parsed.put(ids, workspace)
        return workspace

    def raw(self, ids: Ids) -> bytes | None:
        """The record's bytes as read from the config topic."""
        return self._raw.get(ids)

    def spaces_of(self, tenant_id: str) -> list[str]:
        """The workspaces of ``tenant_id`` held, in the order first seen (a scan: for admins)."""
        return [space for tenant, space in self._raw if tenant == tenant_id]

    def __contains__(self, ids: object) -> bool:
        return ids in self._raw

    def __len__(self) -> int:
        return len(self._raw)
