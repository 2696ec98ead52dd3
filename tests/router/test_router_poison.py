"""One command the router cannot resolve ends rejected; it does not fail its batch.

A failed batch stops the router, and the command came back on every restart: every
tenant of its partition stalled. Real Kafka, an in-process router."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
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

import router._decide
from schemas import ErrorCode, ResultStatus


async def test_a_command_whose_resolution_raises_is_rejected_and_its_batch_routed(
    own_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = own_settings
    await prepare_topics(s)
    odd, good = f"odd{uuid.uuid4().hex[:8]}", f"good{uuid.uuid4().hex[:8]}"
    action = summary_action("slack", "post_message", {"text": "{{ args.summary }}"})
    await apply(s, workspace(odd, [action]), workspace(good, [action]))
    plain_resolve = router._decide.resolve

    def resolve(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if cmd.tenant_id == odd:  # what nothing foresaw, e.g. a schema the check let by
            raise RecursionError("maximum recursion depth exceeded")
        return plain_resolve(cmd, *args, **kwargs)

    monkeypatch.setattr(router._decide, "resolve", resolve)
    commands = [command(good), command(odd), command(good)]
    outputs = await Outputs(s).start()
    try:
        async with in_process_router(s) as routing:
            await routing.handle_batch(stream_events(s, commands))
        got = await outputs.wait_ids([c.command_id for c in commands], limit=30)
    finally:
        await outputs.stop()

    rejected = got[commands[1].command_id].result
    assert rejected is not None and rejected.status is ResultStatus.REJECTED
    assert rejected.error is not None and rejected.error.code is ErrorCode.INTERNAL
    assert "recursion" not in rejected.error.message  # the log has it, not the caller
    assert all(got[c.command_id].routed is not None for c in (commands[0], commands[2]))


async def test_a_command_with_a_field_this_router_does_not_know_ends_rejected(own_settings: Any) -> None:
    """A newer ingress's field, say: the command still gets its one final Result; a record
    that holds no command at all is skipped as before."""
    s = own_settings
    await prepare_topics(s)
    tenant = f"new{uuid.uuid4().hex[:8]}"
    await apply(s, workspace(tenant, [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})]))
    newer, good = command(tenant), command(tenant)
    events = stream_events(s, [newer, good])
    events[0].value = orjson.dumps(orjson.loads(events[0].value) | {"field_of_a_newer_ingress": 1})
    junk = stream_events(s, [good], first_offset=2)[0]
    junk.value = b'{"command_id": "x"}'
    outputs = await Outputs(s).start()
    try:
        async with in_process_router(s) as routing:
            await routing.handle_batch([*events, junk])
            await routing.handle_batch(stream_events(s, [newer], first_offset=3))  # a replay
            assert (routing.routed, routing.rejected, routing.dropped) == (1, 1, 1)
        got = await outputs.wait_ids([newer.command_id, good.command_id], limit=30)
        settled = await outputs.settle()
    finally:
        await outputs.stop()
    rejected = got[newer.command_id].result
    assert rejected is not None and rejected.status is ResultStatus.REJECTED
    assert rejected.error is not None and rejected.error.code is ErrorCode.INTERNAL
    assert got[good.command_id].routed is not None
    assert [o.command_id for o in settled].count(newer.command_id) == 1
