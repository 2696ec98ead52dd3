"""Workspaces held as JSON, parsed on demand into a bounded LRU (core.workspaces)."""

from __future__ import annotations

import tracemalloc

from core.workspaces import WorkspaceStore
from schemas import WorkspaceConfig
from switchyard.demo import demo_tenants


def _workspaces(count: int) -> list[tuple[tuple[str, str], bytes, WorkspaceConfig]]:
    template = demo_tenants("http://127.0.0.1:1")[0].workspace()
    out = []
    for i in range(count):
        workspace = template.model_copy(update={"tenant_id": f"t{i}"})
        raw = workspace.to_bytes()
        out.append(((workspace.tenant_id, workspace.space_id), raw, WorkspaceConfig.from_bytes(raw)))
    return out


def test_every_workspace_is_served_and_only_the_recent_ones_stay_parsed() -> None:
    store = WorkspaceStore(parsed=3)
    items = _workspaces(10)
    for ids, raw, workspace in items:
        store.put(ids, raw, workspace)
    assert len(store) == 10 and ("t0", "main") in store
    first = store.get(("t0", "main"))  # evicted from the parsed ones long ago: parsed again
    assert first == items[0][2] and first is not items[0][2]
    assert store.get(("t0", "main")) is first  # now among the recent ones
    store.pop(("t0", "main"))
    assert store.get(("t0", "main")) is None and ("t0", "main") not in store and len(store) == 9
    assert store.get(("nobody", "main")) is None


def test_one_tenants_many_workspaces_leave_another_tenants_parsed() -> None:
    store = WorkspaceStore(parsed=50)
    (mine, raw, workspace), *_ = _workspaces(1)
    store.put(mine, raw, workspace)
    template = demo_tenants("http://127.0.0.1:1")[0].workspace()
    for i in range(200):
        flood = template.model_copy(update={"tenant_id": "flood", "space_id": f"s{i}"})
        store.put(("flood", f"s{i}"), flood.to_bytes(), flood)
    assert store.get(mine) is workspace  # still parsed: the same object


def test_a_workspace_costs_its_json_not_its_parsed_models() -> None:
    """Every router and ingress replica holds every workspace: parsed, ~7 KiB each."""
    items = _workspaces(2_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parsed = {ids: WorkspaceConfig.from_bytes(raw) for ids, raw, _ in items}
        parsed_bytes = tracemalloc.get_traced_memory()[0] - before
        del parsed
        before = tracemalloc.get_traced_memory()[0]
        store = WorkspaceStore(parsed=100)
        for ids, raw, _ in items:
            store.put(ids, raw, WorkspaceConfig.from_bytes(raw))
        stored_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == 2_000
    # The raw JSON is shared with the caller's list here, so this is the store's own cost:
    # its index and the 100 models it keeps parsed.
    assert stored_bytes < parsed_bytes / 4, (stored_bytes, parsed_bytes)
