"""Every connector against the emulator over real HTTP: shapes, errors, keys, traces, secrets."""

from __future__ import annotations

import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from core.errors import CommandError, PermanentError, RetryableError
from schemas import ErrorCode
from workers.connectors import CONNECTORS, ConnectorCall, CredentialsExpired
from workers.connectors.jira import JiraConnector
from workers.connectors.notion import NotionConnector
from workers.emulators import RunningEmulator, run_emulator

TENANT = "acme"


@dataclass(frozen=True)
class Case:
    operation: str
    arguments: Callable[[str], dict[str, Any]]  # base URL -> arguments
    credentials: Callable[[str], dict[str, Any]]  # token -> credentials
    check: Callable[[dict[str, Any]], bool]
    # Arguments the emulator treats as "does not exist" / invalid (a permanent 4xx).
    rejected: Callable[[str], dict[str, Any]] | None
    rejected_status: int


CASES: dict[str, Case] = {
    "slack": Case(
        "chat.postMessage",
        lambda base: {"channel": "#general", "text": "daily summary"},
        lambda token: {"bot_token": token},
        lambda out: (
            out["channel"].startswith("C") and re.fullmatch(r"\d+\.\d{6}", out["ts"]) is not None
        ),
        lambda base: {"channel": "#missing-channel", "text": "x"},
        200,
    ),
    "gmail": Case(
        "users.messages.send",
        lambda base: {
            "to": ["a@example.com", "b@example.com"],
            "subject": "Daily",
            "body": "Hello",
        },
        lambda token: {
            "access_token": token,
            "refresh_token": f"r-{token}",
            "client_id": "cid",
            "client_secret": f"s-{token}",
        },
        lambda out: (
            re.fullmatch(r"[0-9a-f]{16}", out["id"]) is not None and out["labelIds"] == ["SENT"]
        ),
        # The connector never builds a message the emulator refuses (no To).
        None,
        400,
    ),
    "notion": Case(
        "pages.create",
        lambda base: {
            "parent_page_id": "59833787-2cf9-4fdf-8782-e53db20768a5",
            "title": "Daily",
            "content": "First paragraph.\n\nSecond one.",
        },
        lambda token: {"token": token},
        lambda out: (
            uuid.UUID(out["id"]) is not None and out["url"].endswith(out["id"].replace("-", ""))
        ),
        lambda base: {"parent_page_id": "00000000-0000-0000-0000-000000000000", "title": "x"},
        404,
    ),
    "jira": Case(
        "issues.create",
        lambda base: {
            "project_key": "PROJ",
            "summary": "Broken build",
            "description": "Line 1\nLine 2",
        },
        lambda token: {"email": "bot@example.com", "api_token": token},
        lambda out: (
            out["key"] == "PROJ-1" and out["self"].endswith(f"/rest/api/3/issue/{out['id']}")
        ),
        lambda base: {"project_key": "MISSING", "summary": "x"},
        400,
    ),
    "github": Case(
        "issues.create",
        lambda base: {"owner": "octo", "repo": "hello", "title": "Bug", "labels": ["bug"]},
        lambda token: {"token": token},
        lambda out: out["number"] == 1 and out["html_url"].endswith("/octo/hello/issues/1"),
        lambda base: {"owner": "octo", "repo": "missing-repo", "title": "x"},
        404,
    ),
    "http": Case(
        "request",
        lambda base: {"url": f"{base}/hooks/daily", "method": "POST", "json": {"a": 1}},
        lambda token: {"bearer_token": token},
        lambda out: out["status"] == 200 and out["json"]["received"] is True,
        lambda base: {"url": f"{base}/hooks/daily?status=404", "json": {}},
        404,
    ),
}
ALL = sorted(CASES)


def canary() -> str:
    return f"CANARY-{uuid.uuid4().hex}"


def make_call(
    name: str,
    emulator: RunningEmulator,
    session: aiohttp.ClientSession,
    token: str,
    *,
    arguments: dict[str, Any] | None = None,
    base_url: str | None = None,
    timeout: float = 5.0,
    key: str | None = None,
    trace_headers: dict[str, str] | None = None,
) -> ConnectorCall:
    case = CASES[name]
    return ConnectorCall(
        tenant_id=TENANT,
        operation=case.operation,
        arguments=arguments if arguments is not None else case.arguments(emulator.base_url),
        credentials=case.credentials(token),
        base_url=base_url or emulator.base_url,
        idempotency_key=key or f"idem-{uuid.uuid4().hex}",
        session=session,
        timeout=timeout,
        allowed_hosts=(f"127.0.0.1:{emulator.port}",),
        trace_headers=trace_headers or {},
    )


def register(emulator: RunningEmulator, name: str, token: str, tenant: str = TENANT) -> None:
    emulator.state.add_token({"connector": name, "token": token, "tenant": tenant})


async def run(name: str, call: ConnectorCall) -> dict[str, Any]:
    return await CONNECTORS[name]().execute(call)


@pytest.mark.parametrize("name", ALL)
async def test_each_connector_returns_the_vendor_shape_as_the_right_tenant(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    register(emulator, name, canary(), tenant="beta")
    output = await run(name, make_call(name, emulator, session, token))
    assert CASES[name].check(output), output
    calls = list(emulator.state.calls)
    assert [(c["connector"], c["tenant"], c["status"]) for c in calls] == [
        (name, TENANT, 201 if name in ("jira", "github") else 200)
    ]
    # MCP clients check a tool's structuredContent against its outputSchema (this one).
    schema = CONNECTORS[name].operations[CASES[name].operation].output_schema
    assert schema is not None
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(output)


def test_output_schemas_refuse_what_an_operation_never_returns() -> None:
    for name, case in CASES.items():
        schema = CONNECTORS[name].operations[case.operation].output_schema
        assert schema is not None and schema["type"] == "object", name
        assert not Draft202012Validator(schema).is_valid({}), name


@pytest.mark.parametrize("name", ALL)
async def test_an_unknown_token_raises_credentials_expired(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, name, canary())
    with pytest.raises(PermanentError) as caught:
        await run(name, make_call(name, emulator, session, canary()))
    assert caught.value.code is ErrorCode.CREDENTIALS_INVALID
    assert not caught.value.retryable
    # Refreshed by the runtime, but for Jira's API token (its case here): no refresh exists.
    assert isinstance(caught.value, CredentialsExpired) is (name != "jira")


@pytest.mark.parametrize("name", ["slack", "gmail", "github"])
async def test_an_expire_token_fault_fails_this_call_and_the_next_with_credentials_expired(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    emulator.state.add_fault({"connector": name, "tenant": TENANT, "kind": "expire_token"})
    for _ in range(2):
        with pytest.raises(CredentialsExpired):
            await run(name, make_call(name, emulator, session, token))
    assert emulator.state.faults == []


@pytest.mark.parametrize("name", ALL)
async def test_429_with_retry_after_is_retryable_with_that_delay(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    emulator.state.add_fault({"connector": name, "kind": "429", "retry_after": 7})
    with pytest.raises(RetryableError) as caught:
        await run(name, make_call(name, emulator, session, token))
    assert caught.value.code is ErrorCode.UPSTREAM_RATE_LIMITED
    assert caught.value.retry_after == 7.0
    # The fault was used up: the next call succeeds.
    assert CASES[name].check(await run(name, make_call(name, emulator, session, token)))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["500", "503"])
async def test_5xx_is_retryable_upstream_unavailable(
    name: str, kind: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    emulator.state.add_fault({"connector": name, "tenant": TENANT, "kind": kind, "count": 2})
    for _ in range(2):
        with pytest.raises(RetryableError) as caught:
            await run(name, make_call(name, emulator, session, token))
        assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
        assert caught.value.http_status == int(kind)


@pytest.mark.parametrize("name", [name for name in ALL if CASES[name].rejected])
async def test_a_vendor_refusal_is_permanent(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    case = CASES[name]
    assert case.rejected is not None
    arguments = case.rejected(emulator.base_url)
    with pytest.raises(PermanentError) as caught:
        await run(name, make_call(name, emulator, session, token, arguments=arguments))
    assert not isinstance(caught.value, CredentialsExpired)
    assert caught.value.code is ErrorCode.UPSTREAM_REJECTED
    assert [c["status"] for c in emulator.state.calls] == [case.rejected_status]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["400", "404"])
async def test_a_400_or_404_in_the_vendors_shape_is_permanent(
    name: str, kind: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    emulator.state.add_fault({"connector": name, "kind": kind})
    with pytest.raises(PermanentError) as caught:
        await run(name, make_call(name, emulator, session, token))
    assert caught.value.code is ErrorCode.UPSTREAM_REJECTED
    assert not caught.value.retryable


@pytest.mark.parametrize("name", ALL)
async def test_a_reply_slower_than_the_call_timeout_is_retryable_timeout(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    emulator.state.add_fault({"connector": name, "kind": "latency", "latency_ms": 600})
    with pytest.raises(RetryableError) as caught:
        await run(name, make_call(name, emulator, session, token, timeout=0.15))
    assert caught.value.code is ErrorCode.UPSTREAM_TIMEOUT


@pytest.mark.parametrize("name", ALL)
async def test_an_unreachable_upstream_is_retryable_unavailable(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    async with run_emulator() as closed:
        dead_base, dead_port = closed.base_url, closed.port
    call = make_call(name, emulator, session, canary(), base_url=dead_base)
    if name == "http":
        call = make_call(
            name,
            emulator,
            session,
            canary(),
            arguments={"url": f"{dead_base}/hooks/x"},
            base_url=dead_base,
        )
        call = ConnectorCall(**{**_fields(call), "allowed_hosts": (f"127.0.0.1:{dead_port}",)})
    with pytest.raises(RetryableError) as caught:
        await run(name, call)
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE


def _fields(call: ConnectorCall) -> dict[str, Any]:
    return {name: getattr(call, name) for name in call.__dataclass_fields__}


@pytest.mark.parametrize("name", ALL)
async def test_idempotency_key_and_trace_context_reach_the_upstream(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    token = canary()
    register(emulator, name, token)
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    call = make_call(
        name, emulator, session, token, key="cmd-42", trace_headers={"traceparent": parent}
    )
    await run(name, call)
    (entry,) = emulator.state.calls
    assert entry["idempotency_key"] == "cmd-42"
    version, forwarded_trace, span_id, _ = entry["traceparent"].split("-")
    # Same trace, a new span: the connector's CLIENT span is the upstream call's parent.
    assert (version, forwarded_trace) == ("00", trace_id)
    assert span_id != parent.split("-")[2]
    assert emulator.state.effects[name] == {"cmd-42": 1}


@pytest.mark.parametrize("name", ALL)
async def test_a_canary_credential_never_appears_in_errors_or_the_call_log(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    secret = canary()
    register(emulator, name, secret)
    errors: list[CommandError] = []
    await run(name, make_call(name, emulator, session, secret))
    faults = (
        {"kind": "429", "retry_after": 1},
        {"kind": "500"},
        {"kind": "latency", "latency_ms": 400},
    )
    for fault in faults:
        emulator.state.add_fault({"connector": name, **fault})
        with pytest.raises(CommandError) as caught:
            await run(name, make_call(name, emulator, session, secret, timeout=0.15))
        errors.append(caught.value)
    emulator.state.add_fault({"connector": name, "kind": "400"})
    with pytest.raises(PermanentError) as refused:
        await run(name, make_call(name, emulator, session, secret))
    errors.append(refused.value)
    with pytest.raises(PermanentError) as expired:  # CredentialsExpired but for API tokens
        await run(name, make_call(name, emulator, session, secret + "-wrong"))
    errors.append(expired.value)
    call = make_call(name, emulator, session, secret)
    assert secret not in repr(call) and secret not in str(call)
    for error in errors:
        rendered = (
            "".join(traceback.format_exception(error))
            + repr(error)
            + error.to_info().model_dump_json()
        )
        assert secret not in rendered
    async with session.get(f"{emulator.base_url}/_emulator/calls") as response:
        log = await response.text()
    assert secret not in log and name in log


@pytest.mark.parametrize("name", ALL)
async def test_arguments_outside_the_operation_schema_fail_before_any_request(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(
            name, make_call(name, emulator, session, canary(), arguments={"unexpected": True})
        )
    assert caught.value.code is ErrorCode.INVALID_ARGUMENTS
    assert not emulator.state.calls


@pytest.mark.parametrize("name", ALL)
async def test_an_unknown_operation_fails_before_any_request(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    call = ConnectorCall(
        **{**_fields(make_call(name, emulator, session, canary())), "operation": "nope"}
    )
    with pytest.raises(PermanentError) as caught:
        await run(name, call)
    assert caught.value.code is ErrorCode.UNKNOWN_ACTION
    assert not emulator.state.calls


@pytest.mark.parametrize("name", ["slack", "gmail", "notion", "jira", "github"])
async def test_missing_credentials_fail_as_credentials_missing_without_a_request(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    call = ConnectorCall(
        **{**_fields(make_call(name, emulator, session, canary())), "credentials": {}}
    )
    with pytest.raises(PermanentError) as caught:
        await run(name, call)
    assert caught.value.code is ErrorCode.CREDENTIALS_MISSING
    assert not emulator.state.calls


async def test_notion_splits_a_long_title_and_refuses_a_page_over_its_payload_limit(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", "secret-notion")
    parent = {"parent_page_id": "59833787-2cf9-4fdf-8782-e53db20768a5"}
    title = "😀" * 1_500  # 1,500 characters, 3,000 UTF-16 units: more than one text item holds
    created = await NotionConnector().execute(
        make_call("notion", emulator, session, "secret-notion", arguments={**parent, "title": title})
    )
    assert created["id"]
    calls = len(emulator.state.calls)
    huge = make_call(
        "notion", emulator, session, "secret-notion", arguments={**parent, "title": "t", "content": "漢" * 180_000}
    )  # 540 KB of UTF-8
    with pytest.raises(PermanentError) as caught:
        await NotionConnector().execute(huge)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENTS and "500 KB" in str(caught.value)
    assert len(emulator.state.calls) == calls


def test_jira_reaches_a_3lo_grant_through_atlassians_gateway_and_an_api_token_at_its_site(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    jira, cloud_id = JiraConnector(), "11223344-5566-7788-99aa-bbccddeeff00"
    call = make_call("jira", emulator, session, "t", base_url=jira.default_base_url)
    oauth = ConnectorCall(**{**_fields(call), "credentials": {"access_token": "a", "cloud_id": cloud_id}})
    basic = ConnectorCall(**{**_fields(call), "credentials": {"api_token": "x", "site_url": "https://acme.atlassian.net/"}})
    assert jira._site(oauth) == f"https://api.atlassian.com/ex/jira/{cloud_id}"
    assert jira._site(basic) == "https://acme.atlassian.net"
    # A runtime base URL (the emulators, a proxy) wins over both.
    assert jira._site(make_call("jira", emulator, session, "t")) == emulator.base_url


async def test_github_says_which_labels_it_applied(emulator: RunningEmulator, session: aiohttp.ClientSession) -> None:
    # Without push access GitHub drops the labels and still answers 201: the output shows it.
    register(emulator, "github", "ghp-labels")
    asked = {"owner": "octo", "title": "Bug", "labels": ["bug", "p1"]}
    applied = await run("github", make_call("github", emulator, session, "ghp-labels", arguments={**asked, "repo": "hello"}))
    dropped = await run("github", make_call("github", emulator, session, "ghp-labels", arguments={**asked, "repo": "no-push-x"}))
    assert applied["labels"] == ["bug", "p1"] and dropped["labels"] == []
