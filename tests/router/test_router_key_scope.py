"""Idempotency keys are per workspace, and a retry that crosses the upgrade to them
(first sent with a tenant-wide key, again with a workspace's, or the other way round)
does not run twice: it gets a rejected Result saying why."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from _router_support import (
    Outputs,
    apply,
    command,
    in_process_router,
    prepare_topics,
    stream_events,
    summary_action,
    workspace,
)

from core.settings import Settings
from ingress.testing import read_topic
from router._route import Router
from schemas import Command, ErrorCode, ResultStatus


@pytest.fixture
async def scoped(own_settings: Settings) -> AsyncIterator[tuple[Router, Outputs, str]]:
    settings = own_settings
    await prepare_topics(settings)
    tenant = f"acme_{uuid.uuid4().hex[:6]}"
    action = summary_action("slack", "post_message", {"text": "{{ args.summary }}"})
    await apply(settings, workspace(tenant, [action]), workspace(tenant, [action], space="support"))
    outputs = await Outputs(settings).start()
    try:
        async with in_process_router(settings) as router:
            yield router, outputs, tenant
    finally:
        await outputs.stop()


async def _route(router: Router, *commands: Command, offset: int) -> None:
    await router.handle_batch(stream_events(router.settings, list(commands), offset))


async def test_one_key_in_two_workspaces_of_a_tenant_runs_in_both(scoped) -> None:
    router, outputs, tenant = scoped
    main = command(tenant, key="daily-2026-11-29")
    support = command(tenant, key="daily-2026-11-29", space="support")
    await _route(router, main, support, offset=0)
    await _route(router, main, offset=2)  # a replay in the same workspace: dropped
    out = await outputs.wait_ids([main.command_id, support.command_id])
    assert {o.routed.space_id for o in out.values() if o.routed} == {"main", "support"}
    assert router.routed == 2 and router.dropped == 1
    # The drop is told on the commands topic, for a replica that never saw the Result.
    notices = [
        dict(r.headers) for r in await read_topic(router.settings, router.settings.topics.commands)
        if dict(r.headers).get("sy-kind") == b"duplicate"
    ]
    assert len(notices) == 1 and notices[0]["sy-command-id"] == main.command_id.encode()
    assert notices[0]["sy-routed-at"].isdigit()


@pytest.mark.parametrize("earlier_tenant_wide", [True, False])
async def test_a_retry_across_the_upgrade_is_rejected_not_run_again(
    scoped, earlier_tenant_wide: bool
) -> None:
    router, outputs, tenant = scoped
    first = command(tenant, key="k-1", tenant_wide_key=earlier_tenant_wide)
    retry = command(tenant, key="k-1", tenant_wide_key=not earlier_tenant_wide)
    assert first.command_id != retry.command_id
    await _route(router, first, offset=0)
    await _route(router, retry, offset=1)
    await _route(router, retry, offset=2)  # the retry's own replay: dropped
    out = await outputs.wait_ids([first.command_id, retry.command_id])
    await outputs.settle()
    assert out[first.command_id].routed is not None
    rejected = out[retry.command_id].result
    assert rejected is not None and rejected.status is ResultStatus.REJECTED
    assert rejected.error is not None and rejected.error.code is ErrorCode.INVALID_ARGUMENTS
    assert "idempotency key was used" in rejected.error.message
    assert first.command_id not in rejected.error.message  # it may be another workspace's
    assert [o.command_id for o in outputs.items].count(retry.command_id) == 1
    assert router.routed == 1 and router.rejected == 1 and router.dropped == 1


async def test_both_scopes_of_one_key_in_one_batch_run_once(scoped) -> None:
    router, outputs, tenant = scoped
    first = command(tenant, key="k-2", tenant_wide_key=True)
    retry = command(tenant, key="k-2")
    await _route(router, first, retry, offset=0)
    out = await outputs.wait_ids([first.command_id, retry.command_id])
    assert out[first.command_id].routed is not None
    rejected = out[retry.command_id].result
    assert rejected is not None and rejected.error is not None
    assert rejected.error.code is ErrorCode.INVALID_ARGUMENTS


async def test_a_tenant_wide_key_of_another_workspace_leaves_a_workspace_key_alone(scoped) -> None:
    """Only the same workspace's use counts across scopes in this direction: a workspace
    key's entry names its workspace, so a tenant-wide retry from another one runs."""
    router, outputs, tenant = scoped
    first = command(tenant, key="k-3")
    other = command(tenant, key="k-3", space="support", tenant_wide_key=True)
    await _route(router, first, offset=0)
    await _route(router, other, offset=1)
    out = await outputs.wait_ids([first.command_id, other.command_id])
    assert out[first.command_id].routed is not None and out[other.command_id].routed is not None


async def test_a_command_a_router_of_before_routed_is_found_under_its_tenant_wide_entry(scoped) -> None:
    """During the upgrade a router of before may route a command keyed per workspace; it
    keys its entry tenant-wide. Replayed to a router of after, the command is dropped
    as routed, not rejected as a reuse of its own key."""
    router, outputs, tenant = scoped
    replayed = command(tenant, key="k-4")
    entry = {"c": replayed.command_id, "s": "d", "t": "x", "p": 0, "ts": int(time.time() * 1000), "k": 0}
    router.dedup.put(f"{tenant}/k-4", entry, 0)
    await _route(router, replayed, offset=0)
    assert (router.routed, router.rejected, router.dropped) == (0, 0, 1)
    fresh = command(tenant, key="k-5")
    await _route(router, fresh, offset=1)
    await outputs.wait_ids([fresh.command_id])
    assert replayed.command_id not in {o.command_id for o in await outputs.settle()}


async def test_a_pending_entry_a_router_of_before_left_is_checked_against_the_output(scoped) -> None:
    """A router of before crashed between sending a per-workspace command and marking its
    tenant-wide entry done: the replay finds the output sent and is dropped."""
    router, outputs, tenant = scoped
    replayed = command(tenant, key="k-6")
    await _route(router, replayed, offset=0)
    await outputs.wait_ids([replayed.command_id])
    own = f"{tenant}/main k-6"
    entry = router.dedup.get(own)
    assert entry is not None and entry["c"] == replayed.command_id
    router.dedup.delete(own, 0)
    router.dedup.put(f"{tenant}/k-6", {**entry, "s": "p"}, 0)
    await _route(router, replayed, offset=1)
    assert (router.routed, router.dropped) == (1, 1)
    assert [o.command_id for o in await outputs.settle()].count(replayed.command_id) == 1


async def test_a_tenant_wide_retry_of_a_command_a_router_of_before_routed_is_rejected_once(scoped) -> None:
    """A router of before wrote its tenant-wide entry for a per-workspace command; the
    same key then comes back tenant-wide (through an ingress of before). It ends with a
    rejected Result of its own, once, and the first command's replay is still dropped."""
    router, outputs, tenant = scoped
    first = command(tenant, key="k-9")
    entry = {"c": first.command_id, "s": "d", "t": "x", "p": 0, "ts": int(time.time() * 1000), "k": 0}
    router.dedup.put(f"{tenant}/k-9", entry, 0)
    retry = command(tenant, key="k-9", tenant_wide_key=True)
    await _route(router, retry, offset=0)
    await _route(router, retry, offset=1)  # its replay: dropped
    await _route(router, first, offset=2)  # the first command's replay: dropped too
    out = await outputs.wait_ids([retry.command_id])
    rejected = out[retry.command_id].result
    assert rejected is not None and rejected.error is not None
    assert rejected.error.code is ErrorCode.INVALID_ARGUMENTS
    assert (router.routed, router.rejected, router.dropped) == (0, 1, 2)
    assert [o.command_id for o in await outputs.settle()] == [retry.command_id]
