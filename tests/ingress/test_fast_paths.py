"""The ingress's cheap paths answer exactly what the full ones did.

Results are parsed in full only when someone waits for them, tools are compiled once
per workspace object, command ids keep their published values, the heap is settled
after start, and a caller's W3C trace context still reaches the command it submits.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from mcp_types import JSONRPCResponse

from core.heap import GC_YOUNG_THRESHOLD
from core.settings import Settings
from ingress.command import settle_heap
from ingress.contracts import Identity, Services
from ingress.errors import RateLimited
from ingress.mcp._jsonrpc import RpcError, reply, reply_result
from ingress.mcp._tools import ToolRunner
from ingress.observe import ResultsAggregator
from ingress.pipeline import command_id_for
from ingress.results import ResultsFeed
from ingress.testing import IngressHarness, TenantHandle, read_topic
from schemas import (
    ActionConfig,
    Command,
    Result,
    ResultStatus,
    SpanRecord,
    StageTimes,
    WorkspaceConfig,
)

IDENTITY = Identity("acme", "sales", "ann", "member", "k1")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _result(command_id: str, *, tenant_id: str = "acme") -> Result:
    now = datetime.now(UTC)
    return Result(
        command_id=command_id,
        tenant_id=tenant_id,
        space_id="sales",
        user_id="ann",
        action="notify",
        idempotency_key=f"key-{command_id}",
        status=ResultStatus.SUCCEEDED,
        connector="slack",
        operation="chat.postMessage",
        output={"ok": True, "spans": [1, 2]},
        attempts=1,
        times=StageTimes(submitted_at=now, finished_at=now),
        trace_id=TRACE_ID,
        spans=[
            SpanRecord(
                trace_id=TRACE_ID,
                span_id="00f067aa0ba902b7",
                name="worker.execute",
                start_unix_nano=1,
                end_unix_nano=2,
                attributes={"switchyard.connector": "slack"},
            )
        ],
    )


def _record(value: bytes, offset: int = 0) -> Any:
    return SimpleNamespace(value=value, partition=0, offset=offset, topic="results")


def _mine(result: Result) -> bool:
    return result.tenant_id == "acme"


@pytest.fixture
def from_bytes_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every full parse of a Result (``Result.from_bytes``) made during the test."""
    calls: list[bytes] = []
    original = Result.from_bytes

    def counting(cls: type[Result], data: bytes) -> Result:
        calls.append(data)
        return original(data)

    monkeypatch.setattr(Result, "from_bytes", classmethod(counting))
    return calls


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=300))
def test_command_ids_are_the_documented_hash_of_tenant_workspace_and_key(tenant: str, space: str, key: str) -> None:
    digest = hashlib.sha256(f"switchyard\0{tenant}\0{space}\0{key}".encode()).digest()
    assert command_id_for(tenant, space, key) == base64.b32encode(digest).decode().lower()[:26]


def test_command_ids_keep_the_values_replicas_already_published() -> None:
    # Pinned: replicas and routers of every version since 2026-11-29 derive this same id;
    # a change here gives a retried key a new id (and a second run) across an upgrade.
    assert command_id_for("acme", "main", "daily-2026-11-29") == "fuxmc6ribro4a2i5v5zhineivk"


async def test_a_result_nobody_waits_for_is_counted_without_a_full_parse(
    settings: Settings, from_bytes_calls: list[bytes]
) -> None:
    feed = ResultsFeed(settings)
    aggregator = ResultsAggregator()
    feed.listeners.append(aggregator.add_record)
    result = _result("c-unwaited")
    feed.apply(_record(result.to_bytes()))
    assert from_bytes_calls == []
    assert aggregator.metrics("acme")["total"] == 1
    assert aggregator.commands("acme")[0]["command_id"] == "c-unwaited"
    # Asked for later, it is the whole Result, spans and output included.
    assert feed.get("c-unwaited", _mine) == result
    assert len(from_bytes_calls) == 1
    assert feed.owner("c-unwaited") == ("acme", "sales")


async def test_waiters_get_the_whole_result_parsed_once_for_all_of_them(
    settings: Settings, from_bytes_calls: list[bytes]
) -> None:
    feed = ResultsFeed(settings)
    result = _result("c-waited")
    waiting = [asyncio.create_task(feed.wait("c-waited", 10, _mine, tenant_id="acme")) for _ in range(3)]
    await asyncio.sleep(0)  # each waiter registers before its first suspension
    assert len(feed._waiters["c-waited"]) == 3
    feed.apply(_record(result.to_bytes()))
    async with asyncio.timeout(5):
        answers = await asyncio.gather(*waiting)
    assert answers == [result] * 3
    assert len(from_bytes_calls) == 1


async def test_another_tenants_waiter_does_not_get_the_result(settings: Settings) -> None:
    feed = ResultsFeed(settings)
    theirs = asyncio.create_task(feed.wait("c-shared", 0.3, lambda r: r.tenant_id == "beta", tenant_id="beta"))
    await asyncio.sleep(0)
    feed.apply(_record(_result("c-shared").to_bytes()))
    async with asyncio.timeout(5):
        assert await theirs is None
    assert feed.get("c-shared", lambda r: r.tenant_id == "beta") is None


async def test_one_tenant_cannot_take_every_wait_of_the_replica(settings: Settings) -> None:
    feed = ResultsFeed(settings, max_waiters=10, max_tenant_waiters=3)
    flood = [asyncio.create_task(feed.wait(f"c-flood-{i}", 10, _mine, tenant_id="flood")) for i in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(RateLimited):
        await feed.wait("c-more-1", 10, _mine, tenant_id="flood")
    # Another tenant still waits, and gets its Result.
    quiet = asyncio.create_task(feed.wait("c-quiet-1", 10, _mine, tenant_id="acme"))
    await asyncio.sleep(0)
    result = _result("c-quiet-1")
    feed.apply(_record(result.to_bytes()))
    async with asyncio.timeout(5):
        assert await quiet == result
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)
    # The flood's slots are given back with its waits.
    later = asyncio.create_task(feed.wait("c-later-1", 0.05, _mine, tenant_id="flood"))
    assert await later is None


async def test_a_record_valid_only_in_its_head_is_never_served(settings: Settings) -> None:
    feed = ResultsFeed(settings)
    broken = orjson.loads(_result("c-broken").to_bytes())
    broken["spans"][0]["span_id"] = "not-hex"
    feed.apply(_record(orjson.dumps(broken)))
    assert feed.get("c-broken", _mine) is None
    # Forgotten, as an invalid record is: a valid redelivery is kept.
    good = _result("c-broken")
    feed.apply(_record(good.to_bytes(), offset=1))
    assert feed.get("c-broken", _mine) == good


def test_an_invalid_head_is_ignored_by_the_feed_and_the_aggregator(settings: Settings) -> None:
    feed = ResultsFeed(settings)
    aggregator = ResultsAggregator()
    feed.listeners.append(aggregator.add_record)
    bad = orjson.loads(_result("c-bad-head").to_bytes())
    bad["status"] = "exploded"
    feed.apply(_record(orjson.dumps(bad)))
    feed.apply(_record(b"not json"))
    assert feed.cached == 0 and aggregator.tenant_ids() == []


def test_the_aggregator_renders_spans_of_a_result_fed_as_bytes(settings: Settings) -> None:
    feed = ResultsFeed(settings)
    aggregator = ResultsAggregator()
    feed.listeners.append(aggregator.add_record)
    feed.apply(_record(_result("c-traced").to_bytes()))
    trace = aggregator.trace("acme", "c-traced")
    assert trace is not None
    assert [span["name"] for span in trace["spans"]] == ["worker.execute"]
    assert aggregator.trace("beta", "c-traced") is None


@given(
    st.one_of(st.integers(min_value=-(2**53), max_value=2**53), st.text(max_size=20)),
    st.dictionaries(
        st.text(max_size=10),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10)),
    ),
)
def test_a_prebuilt_answer_has_the_bytes_of_the_model_built_one(
    request_id: int | str, result: dict[str, Any]
) -> None:
    built = reply(JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result))
    fast = reply_result(request_id, result)
    assert fast.body == built.body and fast.content_type == built.content_type
    sse = reply_result(request_id, result, sse=True, headers={"X": "1"})
    assert (
        sse.body
        == reply(JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result), sse=True).body
    )
    assert sse.headers["X"] == "1" and sse.content_type == "text/event-stream"


@dataclass
class _Catalog:
    current: WorkspaceConfig

    def workspace(self, tenant_id: str, space_id: str) -> WorkspaceConfig | None:
        return self.current if (tenant_id, space_id) == ("acme", "sales") else None


def _workspace(*, enabled: bool = True, required: str = "text") -> WorkspaceConfig:
    return WorkspaceConfig(
        tenant_id="acme",
        space_id="sales",
        connectors={"slack": {}},
        actions=[
            ActionConfig(
                name="notify",
                connector="slack",
                operation="chat.postMessage",
                enabled=enabled,
                input_schema={"type": "object", "required": [required]},
            )
        ],
    )


def test_a_tool_reflects_a_config_change_even_with_the_same_version() -> None:
    catalog = _Catalog(_workspace())
    runner = ToolRunner(
        Services(auth=None, catalog=catalog, pipeline=None),  # type: ignore[arg-type]
        page_size=50,
        call_timeout=1,
    )
    assert runner.resolve(IDENTITY, "notify", {"text": "hi"}).name == "notify"
    assert runner.resolve(IDENTITY, "notify", {"text": "again"}).name == "notify"
    catalog.current = _workspace(required="channel")  # same version, new schema
    with pytest.raises(RpcError, match="channel"):
        runner.resolve(IDENTITY, "notify", {"text": "hi"})
    catalog.current = _workspace(enabled=False)
    with pytest.raises(RpcError, match="Unknown tool"):
        runner.resolve(IDENTITY, "notify", {"channel": "c"})


def test_made_up_tool_names_are_refused_and_not_remembered() -> None:
    runner = ToolRunner(
        Services(auth=None, catalog=_Catalog(_workspace()), pipeline=None),  # type: ignore[arg-type]
        page_size=50,
        call_timeout=1,
    )
    for index in range(50):
        with pytest.raises(RpcError, match="Unknown tool"):
            runner.resolve(IDENTITY, f"made-up-{index}", {})
    assert len(runner.actions) == 0


class _ManyWorkspaces:
    """Every workspace asked for exists, each its own object with one ``notify`` tool."""

    def __init__(self) -> None:
        self.made: dict[tuple[str, str], WorkspaceConfig] = {}

    def workspace(self, tenant_id: str, space_id: str) -> WorkspaceConfig:
        key = (tenant_id, space_id)
        if key not in self.made:
            self.made[key] = _workspace().model_copy(update={"tenant_id": tenant_id, "space_id": space_id})
        return self.made[key]


def test_one_tenants_many_tools_do_not_push_another_tenants_compiled_tools_out() -> None:
    runner = ToolRunner(
        Services(auth=None, catalog=_ManyWorkspaces(), pipeline=None),  # type: ignore[arg-type]
        page_size=50,
        call_timeout=1,
    )
    runner.resolve(IDENTITY, "notify", {"text": "hi"})
    flood = [Identity("flood", f"s{n}", "ann", "member", "k2") for n in range(1_500)]
    for identity in flood:
        runner.resolve(identity, "notify", {"text": "hi"})
    assert ("acme", "sales", "notify") in runner.actions
    assert len(runner.actions) <= 1024


async def test_settling_the_heap_freezes_start_up_objects_and_batches_young_collections() -> None:
    threshold = gc.get_threshold()
    try:
        await settle_heap(web.Application())
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_a_callers_trace_context_reaches_the_published_command(
    harness: IngressHarness, acme: TenantHandle
) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    response = await harness.client.post(
        "/v1/commands",
        json={"action": "echo", "arguments": {"text": "traced"}},
        headers={**acme.headers, "TraceParent": traceparent},
    )
    assert response.status == 202
    command_id = (await response.json())["command_id"]
    plain = await harness.client.post(
        "/v1/commands", json={"action": "echo", "arguments": {}}, headers=acme.headers
    )
    assert plain.status == 202
    plain_id = (await plain.json())["command_id"]
    async with asyncio.timeout(30):
        records = await read_topic(harness.settings, harness.settings.topics.commands)
    commands = {c.command_id: c for c in (Command.from_bytes(r.value) for r in records)}
    assert commands[command_id].spans[0].trace_id == TRACE_ID
    assert commands[command_id].spans[0].parent_span_id == "00f067aa0ba902b7"
    assert commands[plain_id].spans[0].trace_id != TRACE_ID
    assert commands[plain_id].spans[0].parent_span_id is None
