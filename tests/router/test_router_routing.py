"""Router behaviour against the real broker, with one router subprocess for the module."""

from __future__ import annotations

import uuid
from datetime import timedelta

import orjson
from _router_support import apply, command, publish, publish_raw, summary_action, workspace
from opentelemetry.trace import SpanKind

from core.telemetry import capture_spans, inject, span
from schemas import (
    TASK_CANCEL_KIND,
    ErrorCode,
    Headers,
    Limits,
    ResultStatus,
    RolePolicy,
    TaskCancel,
)


def _tenant(label: str) -> str:
    return f"{label}_{uuid.uuid4().hex[:8]}"


async def test_same_action_lands_on_each_tenants_connector_with_mapped_arguments(
    live_router,
) -> None:
    s = live_router.settings
    a, b, c = _tenant("a"), _tenant("b"), _tenant("c")
    await apply(
        s,
        workspace(
            a,
            [
                summary_action(
                    "slack", "post_message", {"channel": "#daily", "text": "{{ args.summary }}"}
                )
            ],
        ),
        workspace(
            b,
            [
                summary_action(
                    "gmail",
                    "send_email",
                    {
                        "to": ["boss@example.com"],
                        "subject": "Summary ({{ args.count }} items)",
                        "body": "{{ args.summary | upper }}",
                    },
                )
            ],
        ),
        workspace(
            c,
            [
                summary_action(
                    "notion",
                    "create_page",
                    {"title": "Daily", "items": "{{ args.count }}", "tags": ["{{ args.summary }}"]},
                )
            ],
            limits=Limits(rate_per_second=10_000, burst=10_000, concurrency=3),
        ),
    )
    cmds = [command(t, {"summary": "all green", "count": 3}) for t in (a, b, c)]
    await publish(s, cmds)
    got = await live_router.outputs.wait_ids([x.command_id for x in cmds])

    slack, gmail, notion = (got[x.command_id] for x in cmds)
    assert slack.topic == s.topics.connector("slack")
    assert slack.routed.operation == "post_message"
    assert slack.routed.resolved_arguments == {"channel": "#daily", "text": "all green"}
    assert gmail.topic == s.topics.connector("gmail")
    assert gmail.routed.resolved_arguments == {
        "to": ["boss@example.com"],
        "subject": "Summary (3 items)",
        "body": "ALL GREEN",
    }
    assert notion.topic == s.topics.connector("notion")
    # A leaf that is a single expression keeps its native type.
    assert notion.routed.resolved_arguments == {"title": "Daily", "items": 3, "tags": ["all green"]}
    for out, cmd in zip((slack, gmail, notion), cmds, strict=True):
        assert out.routed.arguments == cmd.arguments
        assert out.headers["sy-tenant"] == cmd.tenant_id
        assert out.headers["sy-command-id"] == cmd.command_id
        assert out.headers["sy-kind"] == "routed"
    # The workspace's limits.concurrency, for the worker's per-tenant cap.
    assert [out.headers["sy-concurrency"] for out in (slack, gmail, notion)] == ["8", "8", "3"]


async def test_configuration_change_reroutes_the_next_command(live_router) -> None:
    s = live_router.settings
    t = _tenant("move")
    await apply(
        s, workspace(t, [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})])
    )
    first = command(t)
    await publish(s, [first])
    assert (await live_router.outputs.wait_ids([first.command_id]))[
        first.command_id
    ].topic == s.topics.connector("slack")

    await apply(
        s,
        workspace(
            t, [summary_action("gmail", "send_email", {"body": "{{ args.summary }}"})], version=2
        ),
    )
    second = command(t)
    await publish(s, [second])
    out = (await live_router.outputs.wait_ids([second.command_id]))[second.command_id]
    assert out.topic == s.topics.connector("gmail")
    assert out.routed.resolved_arguments == {"body": "all green"}


async def test_each_rejection_gives_one_rejected_result_with_a_clear_code(live_router) -> None:
    s = live_router.settings
    t = _tenant("rej")
    actions = [
        summary_action("slack", "post_message", {"text": "{{ args.summary }}"}),
        summary_action("slack", "post_message", {"text": "x"}).model_copy(
            update={"name": "off", "enabled": False}
        ),
        summary_action("slack", "post_message", {"text": "x"}).model_copy(
            update={"name": "admins", "roles": ["admin"]}
        ),
        summary_action("gmail", "send_email", {"body": "x"}).model_copy(update={"name": "mail"}),
        summary_action("slack", "post_message", {"text": "{{ args.missing }}"}).model_copy(
            update={"name": "broken"}
        ),
    ]
    await apply(
        s,
        workspace(
            t,
            actions,
            connectors={"slack": {}},
            roles={
                "member": RolePolicy(),
                "admin": RolePolicy(),
                "viewer": RolePolicy(actions=["other"]),
            },
        ),
    )
    cases = {
        ErrorCode.UNKNOWN_ACTION: command(t, action="nope"),
        ErrorCode.INVALID_ARGUMENTS: command(t, {"summary": 42}),
        ErrorCode.ACTION_DISABLED: command(t, action="off"),
        ErrorCode.ROLE_DENIED: command(t, action="admins", role="member"),
        ErrorCode.CONNECTOR_DISABLED: command(t, action="mail"),
        ErrorCode.MAPPING_FAILED: command(t, action="broken"),
        ErrorCode.DEADLINE_EXPIRED: command(t, deadline=timedelta(seconds=-1)),
        ErrorCode.UNKNOWN_WORKSPACE: command(_tenant("ghost")),
    }
    viewer = command(t, role="viewer")  # RolePolicy.actions does not list daily_summary
    await publish(s, [*cases.values(), viewer])
    ids = [c.command_id for c in [*cases.values(), viewer]]
    await live_router.outputs.wait_ids(ids)
    items = await live_router.outputs.settle()
    for code, cmd in [*cases.items(), (ErrorCode.ROLE_DENIED, viewer)]:
        mine = [o for o in items if o.command_id == cmd.command_id]
        assert len(mine) == 1, (code, mine)
        result = mine[0].result
        assert mine[0].topic == s.topics.results
        assert result is not None and result.status is ResultStatus.REJECTED
        assert result.error.code is code, (code, result.error)
        assert result.error.retryable is False
        assert 0 < len(result.error.message) < 400
    invalid = next(
        o.result for o in items if o.command_id == cases[ErrorCode.INVALID_ARGUMENTS].command_id
    )
    assert invalid.error.message == 'arguments.summary: expected type "string"'
    broken = next(
        o.result for o in items if o.command_id == cases[ErrorCode.MAPPING_FAILED].command_id
    )
    assert "missing" in broken.error.message
    # A rejection names the connector and operation its action resolves to, when the
    # workspace has that action (a consumer counting per connector sees it too).
    routes = {code: (o.result.connector, o.result.operation) for code, cmd in cases.items()
              for o in items if o.command_id == cmd.command_id and o.result is not None}
    assert routes[ErrorCode.INVALID_ARGUMENTS] == ("slack", "post_message")
    assert routes[ErrorCode.ACTION_DISABLED] == ("slack", "post_message")
    assert routes[ErrorCode.CONNECTOR_DISABLED] == ("gmail", "send_email")
    assert routes[ErrorCode.UNKNOWN_ACTION] == (None, None)
    assert routes[ErrorCode.UNKNOWN_WORKSPACE] == (None, None)


async def test_rate_limit_rejects_the_command_past_the_burst_with_retry_after(live_router) -> None:
    s = live_router.settings
    t = _tenant("rate")
    await apply(
        s,
        workspace(
            t,
            [summary_action("slack", "post_message", {})],
            limits=Limits(rate_per_second=0.01, burst=2),
        ),
    )
    cmds = [command(t) for _ in range(3)]
    await publish(s, cmds)
    got = await live_router.outputs.wait_ids([c.command_id for c in cmds])
    assert [got[c.command_id].topic for c in cmds[:2]] == [s.topics.connector("slack")] * 2
    limited = got[cmds[2].command_id].result
    assert limited.error.code is ErrorCode.RATE_LIMITED
    assert 90 < limited.error.retry_after <= 100  # one token at 0.01/s
    # Nothing ran, and the same command submitted again after retry_after may succeed:
    # retryable, as a worker's shed record is (a consumer's retry logic keys on it).
    assert limited.error.retryable is True


async def test_daily_quota_rejects_once_it_is_used_up(live_router) -> None:
    s = live_router.settings
    t = _tenant("quota")
    await apply(
        s, workspace(t, [summary_action("slack", "post_message", {})], limits=Limits(daily_quota=2))
    )
    cmds = [command(t) for _ in range(3)]
    bad = command(t, {"summary": ""})  # rejected for its arguments: spends no quota
    await publish(s, [cmds[0], bad, cmds[1], cmds[2]])
    got = await live_router.outputs.wait_ids([c.command_id for c in [*cmds, bad]])
    assert got[bad.command_id].result.error.code is ErrorCode.INVALID_ARGUMENTS
    assert got[cmds[0].command_id].routed is not None and got[cmds[1].command_id].routed is not None
    exhausted = got[cmds[2].command_id].result
    assert exhausted.error.code is ErrorCode.QUOTA_EXHAUSTED
    assert 0 < exhausted.error.retry_after <= 86_400


async def test_a_repeated_idempotency_key_is_routed_once(live_router) -> None:
    s = live_router.settings
    t = _tenant("dup")
    await apply(s, workspace(t, [summary_action("slack", "post_message", {})]))
    first = command(t, key="same-key")
    again = command(t, key="same-key")
    marker = command(t)
    await publish(s, [first, again])
    await publish(s, [again, marker])  # a later batch too
    await live_router.outputs.wait_ids([first.command_id, marker.command_id])
    items = await live_router.outputs.settle()
    assert len([o for o in items if o.command_id == first.command_id]) == 1


async def test_trace_context_survives_the_hop(live_router) -> None:
    s = live_router.settings
    t = _tenant("trace")
    await apply(s, workspace(t, [summary_action("slack", "post_message", {})]))
    cmd = command(t)
    with capture_spans() as ingress_spans, span("ingress.submit", kind=SpanKind.SERVER) as ingress:
        headers: list[tuple[str, bytes]] = []
        inject(headers)
        ctx = ingress.get_span_context()
    trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    cmd = cmd.model_copy(update={"spans": ingress_spans})
    rejected = command(t, action="nope")
    await publish(s, [cmd, rejected], headers=headers)
    got = await live_router.outputs.wait_ids([cmd.command_id, rejected.command_id])

    out = got[cmd.command_id]
    assert out.headers["traceparent"].split("-")[1] == trace_id
    names = [(sp.name, sp.parent_span_id) for sp in out.routed.spans]
    assert names == [("ingress.submit", None), ("router.route", span_id)]
    router_span = out.routed.spans[-1]
    assert router_span.trace_id == trace_id
    # The worker's spans will hang under the router span: that is what traceparent says.
    assert out.headers["traceparent"].split("-")[2] == router_span.span_id
    result = got[rejected.command_id].result
    assert result.trace_id == trace_id
    assert result.spans[-1].name == "router.route" and result.spans[-1].parent_span_id == span_id


async def test_an_unparseable_command_is_skipped_and_routing_goes_on(live_router) -> None:
    s = live_router.settings
    t = _tenant("junk")
    await apply(s, workspace(t, [summary_action("slack", "post_message", {})]))
    await publish_raw(s, t.encode(), b"not json at all")
    await publish_raw(s, t.encode(), orjson.dumps({"command_id": "x"}))
    after = command(t)
    await publish(s, [after])
    out = (await live_router.outputs.wait_ids([after.command_id]))[after.command_id]
    assert out.routed is not None
    assert "unparseable command skipped" in live_router.process.logs()


async def test_an_mcp_task_cancellation_on_the_commands_topic_is_passed_over(live_router) -> None:
    # Ingress replicas share task cancellations on the commands topic, after the command.
    s = live_router.settings
    t = _tenant("cancel")
    await apply(s, workspace(t, [summary_action("slack", "post_message", {})]))
    skipped_before = live_router.process.logs().count("unparseable command skipped")
    first = command(t)
    await publish(s, [first])
    cancel = TaskCancel(
        command_id=first.command_id, tenant_id=t, space_id=first.space_id, cancelled_at=first.submitted_at
    )
    headers = Headers.for_command(t, first.space_id, first.command_id, kind=TASK_CANCEL_KIND, schema="1")
    await publish_raw(s, t.encode(), cancel.to_bytes(), headers)
    after = command(t)
    await publish(s, [after])
    outs = await live_router.outputs.wait_ids([first.command_id, after.command_id])
    assert all(outs[c.command_id].routed is not None for c in (first, after))
    assert live_router.process.logs().count("unparseable command skipped") == skipped_before
    items = await live_router.outputs.settle()
    assert [o.command_id for o in items].count(first.command_id) == 1
