"""Pure routing logic: mapping, checks in order, limits, caches, dedup sweeping."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from _router_support import command, summary_action, workspace
from pydantic import ValidationError

from core.errors import PermanentError
from core.settings import load_settings
from router import MappingError, compile_mapping, workspace_problem
from router._limits import admit, at_rest
from router._resolve import ActionCache, resolve
from router._state import PartitionedState
from schemas import ErrorCode, Limits, RolePolicy

NOW = datetime.now(UTC)


def test_single_expression_leaves_keep_their_native_type() -> None:
    render = compile_mapping(
        {"n": "{{ args.n + 1 }}", "xs": ["{{ args.xs }}"], "s": "n={{ args.n }}", "lit": 5}
    )
    assert render({"n": 2, "xs": [1, 2]}) == {"n": 3, "xs": [[1, 2]], "s": "n=2", "lit": 5}


def test_an_empty_mapping_passes_the_arguments_through() -> None:
    assert compile_mapping({})({"a": 1}) == {"a": 1}


def test_undefined_values_fail_the_mapping_instead_of_rendering_empty() -> None:
    render = compile_mapping({"a": "{{ args.nope }}", "b": "x {{ args.nope }}"})
    with pytest.raises(MappingError):
        render({})
    with pytest.raises(MappingError):
        compile_mapping({"b": "x {{ args.nope }}"})({})


def test_the_sandbox_blocks_attribute_escapes_and_huge_repetitions() -> None:
    with pytest.raises(MappingError):
        compile_mapping({"x": "{{ args.__class__.__mro__ }}"})({})
    with pytest.raises(MappingError):
        compile_mapping({"x": "{{ args.s * 100000000 }}"})({"s": "ab"})
    with pytest.raises(MappingError):
        compile_mapping({"x": "{{ args.items.append(1) }}"})({"items": []})


@pytest.mark.parametrize(
    "template",
    [
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",  # recursion: a RecursionError crashed the router
        "{% for i in args.xs %}{% for j in args.xs %}.{% endfor %}{% endfor %}",  # n² on the event loop
        "{% set a = args.s ~ args.s %}{% set a = a ~ a %}{{ a }}",  # doubling, line by line
        "{% with a = args.s ~ args.s %}{{ a }}{% endwith %}",
        "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",  # too deep for the parser
    ],
    ids=["macro", "loop", "set", "with", "nesting"],
)
def test_a_mapping_is_straight_line_so_its_work_is_bounded(template: str) -> None:
    with pytest.raises(MappingError):
        compile_mapping({"text": template})
    assert workspace_problem(_ws_mapping({"text": template})) is not None  # refused when written


def test_a_constant_template_is_bounded_while_it_compiles_too() -> None:
    # Jinja folds constants as it compiles (the admin API's check): 98 MB there before.
    tracemalloc.start()
    try:
        try:
            compile_mapping({"text": "{{ '" + "\x0b" * 1_500 + "'|indent(65536, blank=true)|length }} x"})({})
        except MappingError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def _nested_list(inner: list[Any], depth: int) -> list[Any]:
    for _ in range(depth):
        inner = [inner]
    return inner


@pytest.mark.parametrize(
    ("template", "args"),
    [
        ("{{ args.s|center(args.n) }}", {"s": "x", "n": 2_000_000_000}),
        ("{{ args.s.ljust(args.n) }}", {"s": "x", "n": 2_000_000_000}),
        ("{{ '%050000000d' % 1 }}", {}),
        ("{{ '%*d' % (args.n, 1) }}", {"n": 2_000_000_000}),
        ("{{ '{:>1000000000}'.format(1) }}", {}),
        ("{{ '{:>{w}}'.format(1, w=args.n) }}", {"n": 2_000_000_000}),
        ("{{ args|tojson(indent=args.n) }}", {"n": 2_000_000_000}),
        ("{{ args.xs|join(args.sep) }}", {"xs": [0] * 100_000, "sep": "x" * 1_000}),
        ("{{ args.s|join(args.sep) }}", {"s": "a" * 100_000, "sep": "x" * 1_000}),
        ("{{ args.s|replace('a', args.r) }}", {"s": "a" * 100_000, "r": "b" * 1_000}),
        ("{{ args.s.replace('a', args.r) }}", {"s": "a" * 100_000, "r": "b" * 1_000}),
        ("{{ args.s|indent(60000) }}", {"s": "\n" * 100_000}),
        ("{{ args.s|wordwrap(1, true, args.w) }}", {"s": "a" * 100_000, "w": "y" * 1_000}),
        ("{{ args.s.expandtabs(60000) }}", {"s": "\t" * 100_000}),
        ("{{ range(args.n)|list }}", {"n": 2_000_000_000}),
        ("{{ lipsum(10000) }}", {}),
        # Found by a security review: small widths, many fields; indents of many lines.
        ("{{ ('{0:99999}' * 6000).format(1) }}", {}),
        ("{{ ('%(a)99999s' * 6000) % dict(a=1) }}", {}),
        ("{{ ('{0}' * 20000).format(args.s) }}", {"s": "x" * 10_000}),
        ("{{ ('%s' * 20000)|format(*([args.s] * 20000)) }}", {"s": "x" * 10_000}),
        ("{{ range(2000)|list|tojson(60000) }}", {}),
        ("{{ (((((2**64)**64)**64)**64)**64) }}", {}),
        # Each step bounded, the sum of them not: every value built counts.
        ("{{ ([[1] * 4000] * 4000)|sum(start=[]) }}", {}),
        ("{{ range(4000)|map('string')|map('center', 60000)|join }}", {}),
        ("{{ " + " ~ ".join(["args.s"] * 300) + " }}", {"s": "x" * 100_000}),
        ("{{ " + " + ".join(["args.s"] * 150) + " }}", {"s": "x" * 150_000}),
        ("-" + "{{ args.s|center(60000) }}" * 400, {"s": "x"}),
        # A diff review: lists holding lists are written out whole, however short.
        ("{{ [['ab'] * 65536] * 2048 }}", {}),
        ("{{ ([['ab'] * 65536] * 256)|tojson|length }}", {}),
        ("{{ (([['ab'] * 65536] * 256) ~ '')|length }}", {}),
        ("{{ ('x' * 4096).translate({120: 'y' * 65536}) }}", {}),
        # Adding lists copies the whole so far at every step (19 s of CPU each).
        ("{{ ([[1] * 16] * 20000)|sum(start=[])|length }}", {}),
        ("{{ ([{'t': [1] * 65536}] * 256)|sum(attribute='t', start=[])|length }}", {}),
        # A second adversarial review of the bounds.
        ("{{ [args.one]|batch(20000000, 0)|first|length }}", {"one": 1}),
        ("{{ args.s|replace(old='a', new=args.n)|length }}", {"s": "a" * 60_000, "n": "x" * 3_000}),
        ("{{ args.s.translate([''] * 97 + ['x' * 65536])|length }}", {"s": "a" * 3_000}),
        ("{{ args.s|urlize(target=args.t)|length }}", {"s": "ab.com " * 20_000, "t": "x" * 10_000}),
        # A third pass.
        ('{{ (1).to_bytes(200000000, "big")|length }}', {}),
        ("{{ args.s|indent(65536, blank=true)|length }}", {"s": "\r" * 1_500}),
        ("{{ args.s|wordwrap(65536, true, args.w)|length }}", {"s": "\n" * 1_500, "w": "y" * 65_536}),
        ("{{ ([args.x] * 20)|tojson(16)|length }}", {"x": _nested_list([0] * 20_000, 14)}),
        ("{{ ([args.d.items()] * 24000)|string|length }}", {"d": {f"k{i}": i for i in range(200)}}),
        ("{{ ([[-1.2345678901234567e-100] * 65536] * 30)|string|length }}", {}),
        ("{{ [['k', [[-1.2345678901234567e-100] * 65536] * 30]]|urlencode|length }}", {}),
        ("{{ [" + ", ".join(["range(65536)|map('slice', 1)|list"] * 40) + "]|length }}", {}),
    ],
)
def test_what_would_build_a_huge_value_is_refused_before_it_is_built(template: str, args: dict) -> None:
    render = compile_mapping({"text": template})
    tracemalloc.start()
    try:
        with pytest.raises(MappingError):
            render(args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Refused before it was built (built, each is hundreds of MB or more); at most one
    # step's value, such as a list of 65,536 generators, is built before it is counted.
    assert peak < 32 * 2**20


def test_many_leaves_of_one_large_value_are_refused_before_the_whole_is_built() -> None:
    render = compile_mapping({"text": ["{{ args.s }}"] * 2000, "more": ["x{{ args.s }}"] * 2000})
    tracemalloc.start()
    try:
        with pytest.raises(MappingError):
            render({"s": "x" * 100_000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ args.users|map(attribute='name')|join(', ') }}", "a, b"),  # a lazy filter, read once
        ("{{ ', '.join(args.users|map(attribute='name')) }}", "a, b"),
        ("{{ args.tags|select|join('-') }}", "p-q"),
        ("{{ args.tags|reverse|join(',') }}", "q,p"),
        ("""{{ '{"id": %d, "meta": {"k": 1}}' % args.n }}""", '{"id": 5, "meta": {"k": 1}}'),  # braces in %
        ("""{{ '{"account": 1234567, "n": %d}' % args.n }}""", '{"account": 1234567, "n": 5}'),
        ("""{{ '{"a": {"b": "%s"}}'|format(args.n) }}""", '{"a": {"b": "5"}}'),
        ("{{ '%(n)d items' % args }}", "5 items"),
        ("{{ args.tags|join(', ')|truncate(70000) }}", "p, q"),  # truncate only shortens
    ],
)
def test_the_bounds_leave_ordinary_mappings_as_they_were(template: str, expected: str) -> None:
    args = {"users": [{"name": "a"}, {"name": "b"}], "tags": ["p", "q"], "n": 5}
    assert compile_mapping({"text": template})(args) == {"text": expected}


def test_pprint_is_not_offered_to_a_mapping() -> None:
    # Pure Python and slow: ([[''] * 65536] * 40)|pprint took 21 s (tojson writes data).
    with pytest.raises(MappingError, match="pprint"):
        compile_mapping({"text": "{{ ([[args.e] * 65536] * 40)|pprint|length }}"})


def _power(leaf: str, count: int) -> str:
    """A balanced product of ``count`` copies of ``leaf``."""
    return leaf if count == 1 else f"({_power(leaf, count // 2)} * {_power(leaf, count // 2)})"


@pytest.mark.parametrize(
    ("template", "args"),
    [
        # Big integers: a product of bounded powers, then a quadratic remainder (10 s).
        ("{{ (" + _power("((args.b ** 64) ** 16)", 64) + " % " + _power("((args.c ** 64) ** 16)", 32) + ") > 0 }}",
         {"b": 9223372036854775807, "c": 2305843009213693951}),
        ("{{ " + _power("((args.b ** 64) ** 16)", 64) + " is divisibleby(" + _power("((args.c ** 64) ** 16)", 32)
         + ") }}", {"b": 9223372036854775807, "c": 2305843009213693951}),
        # A caller's format string: backtracking on '%(' without ')', a repr per field.
        ("{{ args.f % args.v }}", {"f": "%(" * 100_000, "v": {}}),
        ("{{ args.f.format(args.v) }}", {"f": "{0!r}" * 25_000, "v": "y" * 100_000}),
        ("{{ args.s|wordwrap(1, true, '')|length }}", {"s": "a" * 250_000}),
        ("{{ [args.d.items()] * 65536 == [args.d.items()] * 65536 }}", {"d": {f"k{i}": i for i in range(2_000)}}),
    ],
    ids=["int-remainder", "int-divisibleby", "percent-key-backtracking", "repr-per-field", "wordwrap-quadratic",
         "compared-views"],
)
def test_what_would_take_seconds_of_cpu_is_refused_before_it_runs(template: str, args: dict) -> None:
    render = compile_mapping({"x": template})
    started = time.process_time()
    with pytest.raises(MappingError):
        render(args)
    assert time.process_time() - started < 1.0  # seconds to tens of seconds before


def test_formatting_a_large_text_is_bounded_by_its_fields_not_refused() -> None:
    # Each field counts its own value (a diff review found six fields each charged the
    # longest one, and a dict's every value for one %(key)s, refusing ordinary mails).
    users = [
        {"name": f"user{i}", "email": f"user{i}@example.com", "id": 100_000 + i, "role": "member", "active": True}
        for i in range(600)
    ]
    user = {"name": "Ann", "email": "ann@example.com", "bio": "lorem ipsum " * 2_500}
    args = {"to": "a@example.com", "subject": "Daily", "body": "x" * 51_000, "other": "y" * 200_000, "n": 5,
            "users": users, "user": user}  # fmt: skip
    mapping = {
        "brace": "{{ 'To: {}\nSubject: {}\n\n{}'.format(args.to, args.subject, args.body)|length }}",
        "percent": "{{ ('%s|%s|%s|%s|%s|%s' % (args.to, args.to, args.to, args.to, args.subject, args.body))|length }}",
        "named": "{{ '%(subject)s #%(n)05d' % args }}",
        "mapped": "{{ '{subject}'.format_map(args) }}",
        "repr": "{{ ('{0!r}'.format(args.body))|length }}",
        "sum": "{{ [1, 2, 3]|sum }}",
        # What a join or a field names, not the whole of what holds it.
        "joined": "{{ (args.users|join(', ', attribute='name'))|length }}",
        "field": "{{ '{user[name]} <{user[email]}>'.format(**args) }}",
    }
    rendered = compile_mapping(mapping)(args)
    assert rendered == {
        "brace": 51_000 + 34, "percent": 51_000 + 4 * 13 + 5 + 5, "named": "Daily #00005", "mapped": "Daily",
        "repr": 51_002, "sum": 6,
        "joined": len(", ".join(u["name"] for u in users)), "field": "Ann <ann@example.com>",
    }


def test_straight_line_mappings_still_render() -> None:
    mapping = {
        "text": "Summary: {{ args.summary|upper }} ({{ args.tags|join(', ') }}){% if args.urgent %}!{% endif %}",
        "padded": "{{ '%05d' % args.count }} {{ '{:>8}'.format(args.summary) }}",
        "short": "{{ args.summary|truncate(9) }}",
    }
    rendered = compile_mapping(mapping)({"summary": "all green", "tags": ["a", "b"], "urgent": True, "count": 7})
    assert rendered == {"text": "Summary: ALL GREEN (a, b)!", "padded": "00007 all green", "short": "all green"}


def _ws_mapping(mapping: dict) -> Any:
    return workspace("acme", [summary_action("slack", "post_message", mapping)])


def test_a_template_that_does_not_compile_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match=r"\$\.x"):
        compile_mapping({"x": "{{ unclosed "})


def _ws(**extra):
    return workspace(
        "acme", [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})], **extra
    )


def _code(cmd, ws) -> ErrorCode:
    # "Now" at call time: commands are stamped with the real clock when built, and the
    # module may be imported minutes before this runs in a full suite.
    with pytest.raises(PermanentError) as info:
        resolve(cmd, ws, datetime.now(UTC), ActionCache())
    return info.value.code


def test_checks_run_in_order_and_name_the_most_basic_reason() -> None:
    expired = command("acme", action="nope", deadline=timedelta(seconds=-1))
    assert _code(expired, None) is ErrorCode.DEADLINE_EXPIRED
    assert _code(command("acme", action="nope"), None) is ErrorCode.UNKNOWN_WORKSPACE
    assert _code(command("acme", action="nope"), _ws()) is ErrorCode.UNKNOWN_ACTION
    assert _code(command("acme", {"summary": 1}, role="ghost"), _ws()) is ErrorCode.ROLE_DENIED
    assert (
        _code(command("acme", {"summary": 1}), _ws(connectors={})) is ErrorCode.CONNECTOR_DISABLED
    )


def test_role_policies_allow_by_name_or_star() -> None:
    ws = _ws(roles={"member": RolePolicy(actions=["daily_summary"], connectors=["gmail"])})
    assert _code(command("acme"), ws) is ErrorCode.ROLE_DENIED
    ws = _ws(roles={"member": RolePolicy(actions=["daily_summary"], connectors=["slack"])})
    assert resolve(command("acme"), ws, NOW, ActionCache()).resolved_arguments == {
        "text": "all green"
    }


def test_invalid_arguments_message_names_the_first_error_path_briefly() -> None:
    cmd = command("acme", {"summary": "x" * 5000, "extra": 1})
    with pytest.raises(PermanentError) as info:
        resolve(cmd, _ws(), NOW, ActionCache())
    assert info.value.code is ErrorCode.INVALID_ARGUMENTS
    assert info.value.message.startswith("arguments")
    assert len(info.value.message) < 400


def test_compiled_actions_are_cached_per_version_and_recompiled_when_content_changes() -> None:
    cache = ActionCache(size=2)
    ws = _ws()
    first = cache.get(ws, ws.actions[0])
    assert cache.get(ws, ws.actions[0]) is first
    changed = ws.model_copy(
        update={"actions": [summary_action("slack", "post_message", {"text": "v2"})]}
    )
    assert cache.get(changed, changed.actions[0]) is not first
    for version in range(2, 6):
        other = ws.model_copy(update={"version": version})
        cache.get(other, other.actions[0])
    assert len(cache) == 2


def test_one_tenants_many_actions_do_not_push_another_tenants_compiled_actions_out() -> None:
    cache = ActionCache(size=100)
    mine = _ws()
    compiled = cache.get(mine, mine.actions[0])
    flood = workspace("flood", [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})])
    for version in range(2, 300):
        other = flood.model_copy(update={"version": version})
        cache.get(other, other.actions[0])
    assert cache.get(mine, mine.actions[0]) is compiled
    assert len(cache) <= 100


def test_a_tenants_action_in_use_stays_compiled_while_it_churns_through_others() -> None:
    cache = ActionCache(size=100)
    hot = _ws()
    compiled = cache.get(hot, hot.actions[0])
    for version in range(2, 1_000):
        other = hot.model_copy(update={"version": version})
        cache.get(other, other.actions[0])
        assert cache.get(hot, hot.actions[0]) is compiled


def test_token_bucket_allows_the_burst_then_rejects_with_retry_after_and_refills() -> None:
    limits = Limits(rate_per_second=2, burst=2)
    state, err = admit(None, limits, now=1000.0)
    state, err2 = admit(state, limits, now=1000.0)
    assert err is None and err2 is None
    state, err3 = admit(state, limits, now=1000.0)
    assert err3 is not None and err3.code is ErrorCode.RATE_LIMITED and err3.retry_after == 0.5
    # The key now stands for this rejection: the way to try again is a new one.
    assert "workspace's rate limit" in err3.message and "new idempotency key" in err3.message
    state, err4 = admit(state, limits, now=1000.5)
    assert err4 is None


def test_daily_quota_resets_on_the_next_utc_day() -> None:
    limits = Limits(daily_quota=1)
    day = datetime(2026, 1, 1, 23, 59, tzinfo=UTC).timestamp()
    state, err = admit(None, limits, now=day)
    state, err2 = admit(state, limits, now=day + 1)
    assert err is None and err2 is not None and err2.code is ErrorCode.QUOTA_EXHAUSTED
    assert 0 < err2.retry_after <= 60 and err2.to_info().retryable is True  # again tomorrow
    _, err3 = admit(state, limits, now=day + 120)
    assert err3 is None


def test_a_clock_stepping_back_over_midnight_does_not_refill_the_quota() -> None:
    limits = Limits(daily_quota=1)
    midnight = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    state, err = admit(None, limits, now=midnight + 5)
    state, err2 = admit(state, limits, now=midnight - 5)  # NTP, or a replica whose clock is behind
    _, err3 = admit(state, limits, now=midnight + 6)
    assert err is None
    assert err2 is not None and err2.code is ErrorCode.QUOTA_EXHAUSTED
    assert err3 is not None and err3.code is ErrorCode.QUOTA_EXHAUSTED
    assert not at_rest(state, limits, now=midnight - 5)  # the sweep must not drop it either
    # A day stored far ahead (a clock years off, since corrected) does not hold the quota.
    far = {**state, "day": "2099-01-01"}
    assert admit(far, limits, now=midnight + 7)[1] is None


class _FakeTable:
    def __init__(self) -> None:
        self.data: dict = {}


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list = []

    async def send(self, topic, value, key, partition):
        self.sent.append((partition, orjson.loads(key), value))
        return None


async def test_dedup_sweep_drops_expired_entries_and_the_oldest_beyond_the_tenant_cap() -> None:
    table, producer = _FakeTable(), _FakeProducer()
    state = PartitionedState(table, "dedup-changelog")
    for i in range(5):
        state.put(f"acme/k{i}", {"c": f"c{i}", "s": "d", "ts": 1_000 + i, "k": 2}, 2)
    state.put("beta/old", {"c": "x", "s": "d", "ts": 0, "k": 1}, 1)
    await state.flush(producer)
    producer.sent.clear()
    dropped = state.sweep_dedup(window_ms=10_000, per_tenant=3, total=None, now_ms=10_500)
    assert dropped == 3
    assert sorted(table.data) == ["acme/k2", "acme/k3", "acme/k4"]
    await state.flush(producer)
    assert sorted((p, k, v) for p, k, v in producer.sent) == [
        (1, "beta/old", None),
        (2, "acme/k0", None),
        (2, "acme/k1", None),
    ]


async def test_dedup_sweep_caps_all_tenants_together_oldest_first() -> None:
    # Many tenants, each far below its own cap: memory is still bounded.
    table, producer = _FakeTable(), _FakeProducer()
    state = PartitionedState(table, "dedup-changelog")
    for i in range(50):
        state.put(f"t{i}/k", {"c": f"c{i}", "s": "d", "ts": 1_000 + i, "k": i % 3}, i % 3)
    await state.flush(producer)
    dropped = state.sweep_dedup(window_ms=10_000, per_tenant=3, total=10, now_ms=1_100)
    assert dropped == 40
    assert sorted(table.data) == sorted(f"t{i}/k" for i in range(40, 50))


async def test_usage_sweep_drops_unconfigured_workspaces_and_entries_at_rest() -> None:
    table, producer = _FakeTable(), _FakeProducer()
    state = PartitionedState(table, "usage-changelog")
    limits = Limits(rate_per_second=1.0, burst=10, daily_quota=100)
    day = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    busy, _ = admit(None, limits, now=day + 100)  # spent quota today: kept
    rested, _ = admit(None, limits, now=day - 3_600)  # yesterday, bucket refilled since
    refilling = {**busy, "tokens": 0.0, "used": 0}  # bucket still refilling: kept
    for key, entry, partition in (
        ("acme/sales", busy, 1),
        ("acme/ops", rested, 1),
        ("acme/gone", busy, 1),
        ("beta/sales", refilling, 2),
        ("beta/legacy", rested, 2),
    ):
        state.put(key, {**entry, **({} if key == "beta/legacy" else {"k": partition})}, partition)
    await state.flush(producer)
    producer.sent.clear()
    configured = {("acme", "sales"), ("acme", "ops"), ("beta", "sales"), ("beta", "legacy")}

    def limits_for(tenant_id: str, space_id: str) -> Limits | None:
        return limits if (tenant_id, space_id) in configured else None

    assert state.sweep_usage(limits_for, now=day + 105) == 2
    assert sorted(table.data) == ["acme/sales", "beta/legacy", "beta/sales"]
    await state.flush(producer)
    assert sorted(producer.sent) == [(1, "acme/gone", None), (1, "acme/ops", None)]
    # An entry at rest is what admit would start from anyway.
    assert admit(None, limits, now=day + 105)[0]["tokens"] == admit(rested, limits, now=day + 105)[0]["tokens"]


async def test_config_sync_skips_the_probe_only_for_commands_older_than_the_last_probe() -> None:
    from core.settings import load_settings
    from router._config_view import ConfigView

    view = ConfigView(load_settings({}), clock_skew=0.1)
    probes: list[int] = []

    class Probe:
        async def end_offsets(self, partitions):  # the view has no partitions here
            probes.append(1)
            return {}

    view._probe = Probe()  # type: ignore[assignment]
    started = datetime.now(UTC).timestamp()
    assert await view.sync() is True  # first sync: always probes
    assert probes == [1]
    assert await view.sync(started - 1.0) is True  # submitted well before that probe
    assert probes == [1] and view.probes_skipped == 1
    assert await view.sync(started - 0.05) is True  # within the clock skew: probe again
    assert await view.sync(datetime.now(UTC).timestamp()) is True  # newer than any probe
    assert probes == [1, 1, 1] and view.probes_skipped == 1


async def test_a_config_record_that_cannot_be_applied_does_not_stop_the_view() -> None:
    import asyncio
    from types import SimpleNamespace

    from router._config_view import ConfigView

    view = ConfigView(load_settings({}))
    record = SimpleNamespace(key=b"workspace:acme:sales", value=b"{}")
    batches = [{"tp": [record, record]}]

    class Consumer:
        async def getmany(self, **kwargs):
            if batches:
                return batches.pop()
            await asyncio.sleep(3600)

    seen: list[bytes] = []

    def apply(key, value):
        seen.append(key)
        if len(seen) == 1:
            raise RuntimeError("a bug in applying one record")

    view._consumer = Consumer()  # type: ignore[assignment]
    view._apply = apply  # type: ignore[method-assign]
    follower = asyncio.create_task(view._follow())
    await asyncio.sleep(0.05)
    assert not follower.done() and len(seen) == 2  # went on to the next record, and follows
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower


async def test_a_batch_is_not_decided_with_a_config_view_behind_its_topic() -> None:
    from types import SimpleNamespace

    from aiokafka.errors import KafkaTimeoutError

    from core.errors import KafkaUnavailable
    from core.settings import load_settings
    from router._config_view import ConfigView
    from router._route import Router

    view = ConfigView(load_settings({}), sync_timeout=0.01)

    class BrokenProbe:
        async def end_offsets(self, partitions):
            raise KafkaTimeoutError()

    view._probe = BrokenProbe()  # type: ignore[assignment]
    assert await view.sync() is False and view.in_sync is False
    router = SimpleNamespace(config=view)
    with pytest.raises(KafkaUnavailable):  # the batch fails, and is replayed, rather than decide
        await Router._config_in_sync(router, None)  # type: ignore[arg-type]
    answers = iter([False, True])

    async def sync(newest):
        return next(answers)

    router.config = SimpleNamespace(sync=sync)
    await Router._config_in_sync(router, None)  # type: ignore[arg-type]  # caught up on a retry


def test_the_compiled_validator_decides_and_the_python_one_words_the_rejection() -> None:
    ws = _ws()
    cache = ActionCache()
    action = ws.action("daily_summary")
    assert (
        action is not None and (check := cache.get(ws, action).check) is not None and check.compiled
    )
    resolve(command("acme", {"summary": "ok", "count": 3}), ws, datetime.now(UTC), cache)
    with pytest.raises(PermanentError) as info:
        resolve(command("acme", {"summary": "ok", "count": "3"}), ws, datetime.now(UTC), cache)
    assert info.value.code is ErrorCode.INVALID_ARGUMENTS
    assert "count" in str(info.value) and "integer" in str(info.value)


def test_a_schema_with_a_remote_ref_is_never_fetched() -> None:
    remote = summary_action("slack", "post_message", {"text": "{{ args.summary }}"})
    remote = remote.model_copy(
        update={"input_schema": {"$ref": "http://127.0.0.1:9/never-fetched.json"}}
    )
    ws = workspace("acme", [remote])
    compiled = ActionCache().get(ws, remote)
    # Not fetched: the action has no check, and its commands are rejected with why.
    assert compiled.check is None and "does not resolve" in (compiled.schema_error or "")


def test_the_routers_linger_is_a_setting_within_bounds() -> None:
    assert load_settings({}).router_linger_ms == 1
    assert load_settings({"SWITCHYARD_ROUTER_LINGER_MS": "5"}).router_linger_ms == 5
    for wrong in ("-1", "101", "soon"):
        with pytest.raises(ValidationError):
            load_settings({"SWITCHYARD_ROUTER_LINGER_MS": wrong})
