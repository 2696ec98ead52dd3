"""Pure logic of the ingress: keys, command ids, claims, bounded structures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from core.settings import Settings
from ingress._bounded import LRU, KeyedLocks, TokenBuckets
from ingress.auth import bearer_token, check_claims, requested_space
from ingress.contracts import Identity
from ingress.errors import BadRequest, Forbidden, RateLimited
from ingress.keys import generate_api_key, key_record, parse_api_key, verify_secret
from ingress.pipeline import command_id_for
from ingress.results import ResultsFeed
from ingress.testing import echo_result
from schemas import Command, CommandSource, Result
from schemas.identifiers import CommandId

IDENTITY = Identity("acme", "sales", "ann", "member", "k1")


def test_generated_key_verifies_and_a_changed_secret_does_not():
    plaintext, record = generate_api_key(tenant_id="acme", spaces=["sales"], user_id="ann", role="member")
    parsed = parse_api_key(plaintext)
    assert parsed is not None and parsed.key_id == record.key_id
    assert verify_secret(parsed.secret, record)
    assert not verify_secret(parsed.secret[:-1] + ("A" if parsed.secret[-1] != "A" else "B"), record)
    stored = parsed.secret in record.to_bytes().decode()
    shown = parsed.secret in repr(parsed) or parsed.secret in str(parsed) or parsed.secret in repr(record)
    assert not stored and not shown, (stored, shown)


@given(st.text(max_size=80))
def test_parse_api_key_never_raises(text):
    parse_api_key(text)


def test_command_id_is_deterministic_per_tenant_workspace_and_key():
    assert command_id_for("acme", "main", "k") == command_id_for("acme", "main", "k")
    assert command_id_for("acme", "main", "k") != command_id_for("beta", "main", "k")
    assert command_id_for("acme", "main", "k") != command_id_for("acme", "support", "k")
    assert command_id_for("acme", "main", "k") != command_id_for("acme", "main", "k2")
    TypeAdapter(CommandId).validate_python(command_id_for("acme", "main", "k"))


def test_token_bucket_refuses_then_refills_and_reports_the_wait():
    now = [0.0]
    buckets = TokenBuckets(2.0, 3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another tenant is unaffected
    now[0] = 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a", 10) > 0  # more than the burst: never granted, nothing taken


def test_lru_forgets_the_least_recently_used():
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert "b" not in lru and "a" in lru and len(lru) == 2


def test_lru_tells_what_it_forgets_for_room_only():
    forgotten: list[tuple[str, int]] = []
    lru: LRU[str, int] = LRU(1, on_evict=lambda key, value: forgotten.append((key, value)))
    lru.put("a", 1)
    lru.pop("a")  # taken away, not forgotten for room
    lru.put("b", 2)
    lru.put("c", 3)
    assert forgotten == [("b", 2)]


def test_lru_with_a_byte_budget_forgets_until_the_values_fit_but_keeps_the_newest():
    lru: LRU[str, bytes] = LRU(100, max_bytes=10, weigh=len)
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    lru.put("a", b"12")  # replaced: weighs what it weighs now
    assert lru.bytes == 6
    lru.put("c", b"123456")
    assert "b" not in lru and lru.bytes == 8  # b was the least recently used
    lru.put("d", b"x" * 50)  # alone over the budget: kept, the rest forgotten
    assert list(lru) == ["d"] and lru.bytes == 50
    assert lru.pop("d") == b"x" * 50 and lru.bytes == 0


def test_results_kept_are_bounded_in_bytes_and_those_let_go_of_read_as_finished():
    results = ResultsFeed(Settings(), capacity=1_000, max_bytes=600_000)
    large = [
        _result(n).model_copy(update={"output": {"blob": "x" * 250_000}}) for n in range(4)
    ]
    for result in large:
        results.add(result)
    assert results._results.bytes <= 600_000
    assert results.forgotten(large[0].command_id) == ("acme", "sales")
    assert results.get(large[-1].command_id, lambda r: True) is not None


def test_a_forgotten_result_reads_as_finished_until_its_id_is_let_go_of():
    results = ResultsFeed(Settings(), capacity=1)
    gone: list[str] = []
    results.on_gone.append(gone.append)
    first, second, third = (_result(n) for n in range(3))
    results.add(first)
    results.add(second)  # room for one: the first is forgotten
    assert results.forgotten(first.command_id) == ("acme", "sales")
    assert results.get(first.command_id, lambda r: True) is None
    results.add(third)  # and its id let go of
    assert gone == [first.command_id] and results.forgotten(first.command_id) is None
    assert results.forgotten(second.command_id) == ("acme", "sales")
    results.add(second)  # delivered again: held, not forgotten
    assert results.forgotten(second.command_id) is None and gone == [first.command_id]


def test_one_tenants_flood_of_results_cannot_push_out_another_tenants():
    # Every accepted command ends with a Result (a rejection too): a tenant at its edge
    # rate turned the whole cache over in minutes, and others' polls read 404.
    results = ResultsFeed(Settings(), capacity=100, max_bytes=10_000_000)
    mine = _result(0, "quiet")
    results.add(mine)
    flood = [_result(n, "loud") for n in range(300)]
    for result in flood:
        results.add(result)
    assert results.get(mine.command_id, lambda r: True) is not None
    assert len(results._results) == 100  # the room is used: the flood made it from its own
    assert results.get(flood[-99].command_id, lambda r: True) is not None
    assert results.forgotten(flood[-100].command_id) == ("loud", "sales")
    # What was let go of is remembered as finished per tenant too: the flood's cannot
    # push out the quiet tenant's (whose poll then read "unknown", not "finished").
    for result in [_result(n, "quiet") for n in range(1, 11)]:
        results.add(result)  # past its tenth of a full cache: its own oldest goes
    assert results.forgotten(mine.command_id) == ("quiet", "sales")
    for result in [_result(n, "loud") for n in range(300, 600)]:
        results.add(result)
    assert results.forgotten(mine.command_id) == ("quiet", "sales")


def test_one_tenants_large_results_make_room_from_their_own():
    results = ResultsFeed(Settings(), capacity=1_000, max_bytes=2_000_000)  # a tenth: 200 kB
    mine = _result(0, "quiet")
    results.add(mine)
    big = [_result(n, "bulky").model_copy(update={"output": {"blob": "x" * 600_000}}) for n in range(5)]
    for result in big:
        results.add(result)
    assert results.get(mine.command_id, lambda r: True) is not None
    assert [results.get(r.command_id, lambda r: True) is not None for r in big] == [False, False, True, True, True]


def _result(n: int, tenant: str = "acme") -> Result:
    command = Command(
        command_id=command_id_for(tenant, "sales", f"k{n}"), tenant_id=tenant, space_id="sales", user_id="ann",
        role="member", action="echo", idempotency_key=f"k{n}", submitted_at=datetime.now(UTC),
        deadline=datetime.now(UTC) + timedelta(minutes=1), source=CommandSource.REST,
    )
    return echo_result(command)


def test_bearer_and_workspace_parsing():
    assert bearer_token({"Authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"Authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"Authorization": "Basic abc"}) is None
    assert requested_space("a", {"X-Switchyard-Space": "a"}) == "a"
    assert requested_space(None, {"X-Switchyard-Space": "b"}) == "b"
    with pytest.raises(BadRequest):
        requested_space("a", {"X-Switchyard-Space": "b"})


@pytest.mark.parametrize(
    "body",
    [
        {"tenant_id": "beta"},
        {"tenantId": "beta"},
        {"_meta": {"tenant": "beta"}},
        {"params": {"_meta": {"tenant_id": "beta"}}},
        {"params": {"arguments": {"tenant_id": "beta"}}},
        {"arguments": {"tenant_id": ["acme"]}},
        {"space_id": "support"},
        {"_meta": {"space_id": "support"}},
    ],
)
def test_claims_of_another_tenant_or_workspace_are_forbidden(body):
    with pytest.raises(Forbidden):
        check_claims(IDENTITY, body=body)


def test_claims_matching_the_identity_and_foreign_space_arguments_pass():
    check_claims(IDENTITY, headers={"X-Switchyard-Tenant": "acme"},
                 body={"tenant_id": "acme", "arguments": {"space_id": "confluence-space"}})
    with pytest.raises(Forbidden):
        check_claims(IDENTITY, headers={"X-Switchyard-Tenant": "beta"})


def test_retry_after_is_whole_seconds_rounded_up():
    assert RateLimited("x", 0.2).headers() == {"Retry-After": "1"}
    assert RateLimited("x", 2.1).headers() == {"Retry-After": "3"}


def test_mcp_session_key_comes_from_the_shared_session_secret_before_the_admin_token() -> None:
    from core.settings import load_settings
    from ingress.mcp._options import McpOptions

    env = {"SWITCHYARD_MCP_SESSION_SECRET": "shared", "SWITCHYARD_ADMIN_TOKEN": "admin"}
    assert McpOptions.from_settings(load_settings(env)).session_secret == "shared"
    assert McpOptions.from_settings(load_settings({"SWITCHYARD_ADMIN_TOKEN": "admin"})).session_secret == "admin"
    assert McpOptions.from_settings(load_settings({})).session_secret is None


def test_the_public_url_gives_the_browser_origin_allowed_on_mcp() -> None:
    from ingress.app import public_origin

    assert public_origin("https://switchyard.example.com/base/") == ("https://switchyard.example.com",)
    assert public_origin("http://sy.internal:8080") == ("http://sy.internal:8080",)
    assert public_origin(None) == () and public_origin("not a url") == ()


def test_an_existing_key_gets_a_record_of_its_own_that_verifies_it():
    plaintext, first = generate_api_key(tenant_id="acme", spaces=["main"], user_id="ann", role="admin")
    again = key_record(plaintext, tenant_id="acme", spaces=["main"], user_id="ann", role="admin")
    parsed = parse_api_key(plaintext)
    assert parsed is not None and again.key_id == first.key_id == parsed.key_id
    assert again.salt != first.salt and verify_secret(parsed.secret, again)
    with pytest.raises(ValueError):
        key_record("not-a-key", tenant_id="acme", spaces=["main"], user_id="ann", role="admin")


def test_an_lru_with_owners_makes_room_from_an_owner_past_its_tenth():
    evicted: list[str] = []
    lru: LRU[str, tuple[str, bytes]] = LRU(
        20, max_bytes=1_000, weigh=lambda v: len(v[1]), owner=lambda v: v[0],
        on_evict=lambda key, _: evicted.append(key),
    )  # fmt: skip
    for n in range(15):  # alone, an owner may fill what there is room for
        lru.put(f"a{n}", ("alone", b"x"))
    assert len(lru) == 15 and not evicted
    lru.put("q", ("quiet", b"x"))
    for n in range(10):  # full: room comes from the owner past its share (2 of 20)
        lru.put(f"l{n}", ("loud", b"y"))
    assert "q" in lru and len(lru) == 20 and evicted == [f"l{n}" for n in range(6)]
    lru.put("b0", ("bulky", b"z" * 500))
    lru.put("b1", ("bulky", b"z" * 500))  # over 1,000 bytes, bulky past its 100: its own oldest
    assert "b0" not in lru and "b1" in lru and "q" in lru
    lru.put("b1", ("quiet", b"z"))  # the same key, now another owner's
    assert lru.pop("q") is not None and lru.pop("b1") is not None and lru.bytes == len(lru)


async def test_keyed_locks_serialise_one_key_and_let_others_through():
    # One workspace's admin write waiting on a stalled broker must not hold up another's.
    locks = KeyedLocks()
    order: list[str] = []
    stalled = asyncio.Event()

    async def write(key: str, name: str, wait: asyncio.Event | None = None) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            if wait is not None:
                await wait.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(write("acme/sales", "a1", stalled))
    await asyncio.sleep(0)
    second = asyncio.create_task(write("acme/sales", "a2"))
    other = asyncio.create_task(write("beta/main", "b"))
    await other  # not held up by the stalled write of another workspace
    assert order == ["a1 in", "b in", "b out"]
    stalled.set()
    await asyncio.gather(first, second)
    assert order[3:] == ["a1 out", "a2 in", "a2 out"]
    assert len(locks) == 0  # nothing kept once nobody holds or waits


def test_only_errors_of_an_unreachable_broker_start_the_short_publish_wait() -> None:
    from aiokafka.errors import (
        KafkaConnectionError,
        KafkaTimeoutError,
        MessageSizeTooLargeError,
        NotLeaderForPartitionError,
        TopicAuthorizationFailedError,
    )

    from ingress.pipeline import _broker_away

    for away in (KafkaTimeoutError(), KafkaConnectionError(), NotLeaderForPartitionError(), TimeoutError(), OSError()):
        assert _broker_away(away), away
    # One record refused: the broker answers; other submits must keep their full wait.
    for refusal in (MessageSizeTooLargeError(), TopicAuthorizationFailedError(), ValueError()):
        assert not _broker_away(refusal), refusal


def test_the_batch_cancel_body_declares_the_claims_its_handler_accepts() -> None:
    from ingress.models import CLAIM_FIELDS
    from ingress.openapi import openapi_document

    schema = openapi_document()["components"]["schemas"]["CancelBatchRequest"]
    assert schema.get("additionalProperties") is False  # closed: what clients send
    assert [claim for claim in CLAIM_FIELDS if claim not in schema["properties"]] == []
