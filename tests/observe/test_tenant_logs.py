"""Per-tenant log lines on the real logs topic, keyed by tenant, bounded and redacted."""

from __future__ import annotations

import logging

import orjson
import pytest

from core.kafka import ensure_topics
from core.logs import bind
from core.metrics import Metrics
from core.settings import Settings
from core.tenant_logs import TenantLogHandler, TenantLogPublisher, redact
from ingress.testing import read_topic

CANARY = "xoxb-canary-7f3a9c1e5b"


async def test_one_tenants_lines_are_keyed_by_it_and_its_stream_holds_no_other_tenant(
    settings: Settings,
) -> None:
    await ensure_topics(settings, [settings.topics.logs])
    publisher = TenantLogPublisher(settings)
    handler = TenantLogHandler(publisher)
    log = logging.getLogger("workers.test_tenant_logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    await publisher.start()
    try:
        for i in range(5):
            with bind(tenant_id="acme", space_id="sales", command_id=f"c{i}", trace_id="ab" * 16):
                log.info("sent message %d with token=%s", i, CANARY, extra={"fields": {"connector": "slack", "token": CANARY}})
            with bind(tenant_id="beta", space_id="ops", command_id=f"d{i}"):
                log.warning("beta line %d", i)
        log.info("outside any tenant: not published")
        publisher.publish("info", f"explicit line, Authorization: Bearer {CANARY}", tenant_id="acme", command_id="c9")
    finally:
        await publisher.stop()
        log.removeHandler(handler)
    assert publisher.sent == 11 and publisher.dropped == 0
    records = await read_topic(settings, settings.topics.logs)
    assert {r.key for r in records} == {b"acme", b"beta"}
    acme = [orjson.loads(r.value) for r in records if r.key == b"acme"]
    assert len(acme) == 6
    assert all(line["tenant_id"] == "acme" for line in acme)
    assert not any("beta" in r.value.decode() for r in records if r.key == b"acme")
    first = next(line for line in acme if line["command_id"] == "c0")
    assert set(first) == {"ts", "level", "tenant_id", "space_id", "command_id", "trace_id", "msg", "connector"}
    assert first["msg"].startswith("sent message 0 with token=") and first["trace_id"] == "ab" * 16
    assert all(CANARY not in r.value.decode() for r in records)
    # A tenant's lines share one partition: the tenant's stream is ordered.
    assert len({r.partition for r in records if r.key == b"acme"}) == 1


async def test_a_full_queue_drops_and_counts_lines_instead_of_blocking(settings: Settings) -> None:
    metrics = Metrics("worker")
    publisher = TenantLogPublisher(settings, max_queue=10, metrics=metrics)
    # Not started: nothing drains the queue, so the 11th line onwards must be dropped at once.
    accepted = [publisher.publish("info", f"line {i}", tenant_id=f"t{i % 20}") for i in range(25)]
    assert accepted.count(True) == 10 and publisher.dropped == 15
    assert "switchyard_tenant_log_dropped_total 15.0" in metrics.exposition().decode()


async def test_a_flooding_tenant_loses_its_own_lines_past_its_share_not_others(settings: Settings) -> None:
    publisher = TenantLogPublisher(settings, max_queue=100)  # a tenant's share: 10
    flood = [publisher.publish("info", f"line {i}", tenant_id="acme") for i in range(50)]
    quiet = [publisher.publish("info", f"line {i}", tenant_id="beta") for i in range(5)]
    assert flood.count(True) == 10 and all(quiet) and publisher.dropped == 40


async def test_lines_the_broker_refuses_are_counted_as_dropped(settings: Settings) -> None:
    class Refusing:
        async def send(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("MessageSizeTooLarge")

    metrics = Metrics("worker")
    publisher = TenantLogPublisher(settings, producer=Refusing(), metrics=metrics)  # type: ignore[arg-type]
    await publisher.start()
    for i in range(3):
        publisher.publish("info", f"line {i}", tenant_id="acme")
    await publisher.stop(flush_timeout=2)
    assert publisher.dropped == 3
    assert "switchyard_tenant_log_dropped_total 3.0" in metrics.exposition().decode()


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("upstream said X-Api-Key: k7Qz9p1abc is invalid", "k7Qz9p1abc"),  # a hyphenated key name
        ("api-key: abcdef12345", "abcdef12345"),
        ("calling https://bob:hunter2pass@api.example.com/hook", "hunter2pass"),  # URL user information
        ("GET /files?sig=abcDEF123456&x=1", "abcDEF123456"),
        ("with sk-abcdefghijklmnop1234", "sk-abcdefghijklmnop1234"),
        ("with glpat-abcdefghij12", "glpat-abcdefghij12"),
        ('{"token": "ab\\"cdefgh", "n": 1}', "cdefgh"),  # the tail after an escaped quote
    ],
)
def test_secrets_in_the_shapes_upstreams_write_them_are_redacted(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_ordinary_words_and_trace_ids_are_kept() -> None:
    text = "design=blue signal=on status succeeded trace 0123456789abcdef0123456789abcdef"
    assert redact(text) == text
