"""Shared helpers of the observability tests: Results to feed, an ingress with observe mounted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from core.kafka import make_producer, start_client
from core.settings import Settings
from ingress import dashboard, observe
from ingress.admin import ensure_ingress_topics
from ingress.app import SERVICES, STATE, create_app
from ingress.testing import IngressHarness
from schemas import (
    ErrorCode,
    ErrorInfo,
    Headers,
    Result,
    ResultStatus,
    RoutedCommand,
    SpanRecord,
    StageTimes,
)


def make_result(
    tenant_id: str,
    *,
    status: ResultStatus = ResultStatus.SUCCEEDED,
    connector: str = "slack",
    latency: float = 0.1,
    code: ErrorCode | None = None,
    message: str = "upstream said no",
    finished: datetime | None = None,
    space_id: str = "main",
    action: str = "notify",
    spans: int = 3,
) -> Result:
    """A final Result as a worker would write it, with a small span tree."""
    finished = finished or datetime.now(UTC)
    submitted = finished - timedelta(seconds=latency)
    trace_id = uuid.uuid4().hex
    root = uuid.uuid4().hex[:16]
    start_ns = int(submitted.timestamp() * 1e9)
    end_ns = int(finished.timestamp() * 1e9)
    names = ["ingress POST /v1/commands", "router route", "worker execute", "slack chat.postMessage"]
    span_records = [
        SpanRecord(
            trace_id=trace_id,
            span_id=root if i == 0 else uuid.uuid4().hex[:16],
            parent_span_id=None if i == 0 else root,
            name=names[i % len(names)],
            kind=("server", "consumer", "consumer", "client")[i % 4],
            start_unix_nano=start_ns + (end_ns - start_ns) * i // (spans + 1),
            end_unix_nano=end_ns if i == 0 else start_ns + (end_ns - start_ns) * (i + 1) // (spans + 1),
            status="error" if (i == spans - 1 and status is not ResultStatus.SUCCEEDED) else "ok",
            attributes={"messaging.system": "kafka"},
        )
        for i in range(spans)
    ]
    error = None
    if status is not ResultStatus.SUCCEEDED:
        error = ErrorInfo(code=code or ErrorCode.UPSTREAM_UNAVAILABLE, message=message)
    return Result(
        command_id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        space_id=space_id,
        user_id="u1",
        action=action,
        idempotency_key=uuid.uuid4().hex,
        status=status,
        connector=connector,
        operation="op",
        error=error,
        attempts=1,
        times=StageTimes(submitted_at=submitted, finished_at=finished),
        trace_id=trace_id,
        spans=span_records,
    )


async def publish_results(settings: Settings, results: list[Result]) -> None:
    """Write Results to the real results topic, keyed by tenant (as the workers do)."""
    producer = make_producer(settings)
    await start_client(producer, what="test results producer")
    try:
        futures = [
            await producer.send(
                settings.topics.results,
                value=r.to_bytes(),
                key=r.tenant_id.encode(),
                headers=[(Headers.TENANT, r.tenant_id.encode())],
            )
            for r in results
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class ObservedHarness(IngressHarness):
    """The real ingress app with ``ingress.observe`` and the dashboard mounted."""

    observer: observe.Observer

    async def __aenter__(self) -> ObservedHarness:
        await ensure_ingress_topics(self.settings)
        app = await create_app(self.settings, self.options)
        self.observer = observe.setup(app, app[SERVICES], self.settings)
        dashboard.setup(app)
        self.client = TestClient(TestServer(app, host="127.0.0.1"))
        await self._stack.enter_async_context(self.client)
        async with asyncio.timeout(30):
            await app[STATE].directory.ready.wait()
        return self

    async def wait_for_results(self, count: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until the observer has counted ``count`` results in all."""
        aggregator = self.observer.aggregator
        async with asyncio.timeout(timeout):
            while sum(aggregator.metrics(t)["total"] for t in aggregator.tenant_ids()) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # poll the in-memory aggregate, bounded by the timeout


def make_routed_command(tenant_id: str, *, connector: str = "slack") -> RoutedCommand:
    """A routed command as a worker receives it, routed 10 ms after submission."""
    routed_at = datetime.now(UTC)
    submitted = routed_at - timedelta(milliseconds=10)
    return RoutedCommand(
        command_id=f"c{uuid.uuid4().hex[:20]}",
        tenant_id=tenant_id,
        space_id="main",
        user_id="u1",
        role="member",
        action="notify",
        arguments={"text": "hi"},
        idempotency_key=uuid.uuid4().hex,
        submitted_at=submitted,
        deadline=submitted + timedelta(minutes=2),
        source="rest",
        connector=connector,
        operation="send",
        resolved_arguments={"text": "hi"},
        routed_at=routed_at,
    )


def json_of(payload: Any) -> str:
    import orjson

    return orjson.dumps(payload).decode()
