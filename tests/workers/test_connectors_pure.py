"""Pure connector logic: error mapping tables, document builders, Gmail encoding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import PermanentError, RetryableError
from schemas import CONNECTORS as WIRE_CONNECTORS
from schemas import ErrorCode
from workers.connectors import CONNECTORS, CredentialsExpired, classify_http, get_connector
from workers.connectors._base import parse_retry_after
from workers.connectors.github import github_rate_limit
from workers.connectors.gmail import (
    ADDRESS_PATTERN,
    build_message,
    decode_raw,
    encode_raw,
    normalize_subject,
)
from workers.connectors.jira import adf_document
from workers.connectors.notion import paragraph_blocks, utf16_length
from workers.connectors.slack import slack_error


def test_the_registry_holds_every_connector_the_wire_schema_names() -> None:
    assert set(CONNECTORS) == set(WIRE_CONNECTORS)
    assert get_connector("slack").name == "slack"
    with pytest.raises(PermanentError) as caught:
        get_connector("fax")
    assert caught.value.code is ErrorCode.CONNECTOR_DISABLED
    # Only the webhook connector can promise single side effects (receiver permitting).
    assert {name for name, kind in CONNECTORS.items() if kind.upstream_idempotency} == {"http"}
    assert {name for name, kind in CONNECTORS.items() if kind.oauth} == {"gmail", "jira"}
    # These look upstream for an earlier attempt's effect before acting again.
    assert {name for name, kind in CONNECTORS.items() if kind.finds_done} == {"slack", "gmail", "github", "jira", "notion"}


@pytest.mark.parametrize(
    ("code", "kind", "error_code"),
    [
        ("invalid_auth", CredentialsExpired, ErrorCode.CREDENTIALS_INVALID),
        ("token_expired", CredentialsExpired, ErrorCode.CREDENTIALS_INVALID),
        ("not_authed", CredentialsExpired, ErrorCode.CREDENTIALS_INVALID),
        ("ratelimited", RetryableError, ErrorCode.UPSTREAM_RATE_LIMITED),
        ("internal_error", RetryableError, ErrorCode.UPSTREAM_UNAVAILABLE),
        ("missing_scope", PermanentError, ErrorCode.CREDENTIALS_INVALID),
        ("channel_not_found", PermanentError, ErrorCode.UPSTREAM_REJECTED),
        ("x\r\ninjected", PermanentError, ErrorCode.UPSTREAM_REJECTED),
    ],
)
def test_slack_ok_false_codes_map_to_the_retry_decision(
    code: str, kind: type, error_code: ErrorCode
) -> None:
    error = slack_error(code, what="slack", retry_after=3.0)
    assert type(error) is kind and error.code is error_code
    assert "\n" not in error.message
    if error_code is ErrorCode.UPSTREAM_RATE_LIMITED:
        assert error.retry_after == 3.0


def test_github_403_is_a_rate_limit_only_with_its_rate_limit_headers_or_message() -> None:
    assert github_rate_limit(403, {}, what="gh") is None
    assert github_rate_limit(403, {}, what="gh", body=b'{"message": "Resource not accessible"}') is None
    assert github_rate_limit(404, {"Retry-After": "5"}, what="gh") is None
    # A secondary limit may say so only in its message: GitHub asks for at least a minute.
    message = b'{"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}'
    secondary = github_rate_limit(403, {}, what="gh", body=message)
    assert secondary is not None and secondary.retry_after == 60.0
    # A primary limit sent as 429 waits for its reset too, not a few seconds.
    reset_429 = github_rate_limit(
        429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2800"}, what="gh", now=1000.0
    )
    assert reset_429 is not None and reset_429.retry_after == 1800.0
    assert (bare_429 := github_rate_limit(429, {}, what="gh")) is not None and bare_429.retry_after == 60.0
    by_header = github_rate_limit(403, {"Retry-After": "5"}, what="gh")
    assert by_header is not None and by_header.retry_after == 5.0
    by_reset = github_rate_limit(
        403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1060"}, what="gh", now=1000.0
    )
    assert (
        by_reset is not None
        and by_reset.retry_after == 60.0
        and by_reset.code is ErrorCode.UPSTREAM_RATE_LIMITED
    )


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (401, CredentialsExpired, ErrorCode.CREDENTIALS_INVALID),
        (403, PermanentError, ErrorCode.CREDENTIALS_INVALID),
        (404, PermanentError, ErrorCode.UPSTREAM_REJECTED),
        (408, RetryableError, ErrorCode.UPSTREAM_TIMEOUT),
        (422, PermanentError, ErrorCode.UPSTREAM_REJECTED),
        (429, RetryableError, ErrorCode.UPSTREAM_RATE_LIMITED),
        (502, RetryableError, ErrorCode.UPSTREAM_UNAVAILABLE),
    ],
)
def test_classify_http_decides_retry_by_status(status: int, kind: type, code: ErrorCode) -> None:
    error = classify_http(status, retry_after=None, what="x")
    assert type(error) is kind and error.code is code  # type: ignore[attr-defined]


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("12") == 12.0 and parse_retry_after(" 1.5 ") == 1.5
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now)
        == 30.0
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    )
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("value", ["1e12", "inf", "nan", "-5", "1.5e9", "999999999999999999999", "\xb2", "١٢"])
def test_a_retry_after_out_of_the_rfc_or_of_reason_is_bounded_and_never_crashes_a_retry(value: str) -> None:
    from workers._retry import RetryPolicy, decide

    now = datetime(2026, 1, 1, tzinfo=UTC)
    wait = parse_retry_after(value, now=now)
    assert wait is None or 0 <= wait <= 86_400
    decision = decide(
        RetryPolicy(), retryable=True, retry_after=wait, failures_here=1, next_tier=0, now=now,
        deadline=now + timedelta(hours=1),
    )  # fmt: skip
    assert decision is not None  # no OverflowError: a retry or an expiry, not a crashed command
    assert parse_retry_after(format_datetime(datetime(9999, 12, 31, tzinfo=UTC), usegmt=True), now=now) == 86_400


def test_jira_description_becomes_an_adf_document_without_empty_text_nodes() -> None:
    doc = adf_document("First line\nsecond line\n\n\n\nNext paragraph\n")
    assert doc == {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "First line"},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "second line"},
                ],
            },
            {"type": "paragraph", "content": [{"type": "text", "text": "Next paragraph"}]},
        ],
    }
    assert adf_document("") == {"type": "doc", "version": 1, "content": []}


def test_notion_content_splits_into_paragraphs_and_2000_character_rich_text() -> None:
    blocks = paragraph_blocks("a" * 4500 + "\n\nsecond")
    assert [len(item["text"]["content"]) for item in blocks[0]["paragraph"]["rich_text"]] == [
        2000,
        2000,
        500,
    ]
    assert blocks[1]["paragraph"]["rich_text"][0]["text"]["content"] == "second"
    with pytest.raises(ValueError):
        paragraph_blocks("\n\n".join(["p"] * 101))


def test_notion_counts_2000_as_utf16_units_and_never_splits_a_character() -> None:
    text = "a" + "😀" * 1_500  # 3,001 units: Notion refuses a piece over 2,000 of them
    (block,) = paragraph_blocks(text)
    pieces = [item["text"]["content"] for item in block["paragraph"]["rich_text"]]
    assert "".join(pieces) == text
    assert [utf16_length(piece) for piece in pieces] == [1_999, 1_002]  # the emoji stays whole


# Every address the operation schema admits.
_ADDRESS = st.from_regex(ADDRESS_PATTERN, fullmatch=True).filter(lambda a: len(a) <= 320)
# Header text: printable, no line breaks (the operation schema forbids them in subjects).
_SUBJECT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=300)
_BODY = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=3000
)


@given(
    to=st.lists(_ADDRESS, min_size=1, max_size=5),
    cc=st.lists(_ADDRESS, max_size=3),
    subject=_SUBJECT,
    body=_BODY,
)
def test_gmail_raw_round_trips_through_rfc822_and_base64url(
    to: list[str], cc: list[str], subject: str, body: str
) -> None:
    raw = encode_raw(build_message(to=to, subject=subject, body=body, cc=cc or None))
    assert set(raw) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    parsed = decode_raw(raw.rstrip("="))  # Gmail accepts unpadded base64url too
    assert [a.addr_spec for a in parsed["To"].addresses] == to
    assert [a.addr_spec for a in parsed["Cc"].addresses] == cc if cc else parsed["Cc"] is None
    assert parsed["Subject"] == normalize_subject(subject)
    # On the wire every line ends in CRLF and the body ends with a line end.
    expected = "\r\n".join(body.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    assert parsed.get_content() == (expected if expected.endswith("\r\n") else expected + "\r\n")


def test_gmail_message_headers_cannot_be_injected() -> None:
    message = build_message(to="a@example.com", subject="hi\r\nBcc: evil@example.com", body="x")
    parsed = decode_raw(encode_raw(message))
    assert parsed["Bcc"] is None and parsed["Subject"] == "hi Bcc: evil@example.com"
    with pytest.raises(ValueError):
        build_message(to="a@example.com\r\nBcc: evil@example.com", subject="hi", body="x")


def test_credentials_a_connector_could_never_call_with_are_named_by_field_not_value():
    from workers.connectors import credentials_problem

    assert credentials_problem("slack", {"bot_token": "xoxb-1"}) is None
    problem = credentials_problem("slack", {"bot_tokn": "xoxb-secret"})
    assert problem == "slack credentials need {bot_token} or {token}, each a non-empty string"
    assert credentials_problem("gmail", {"access_token": 5}) is not None
    # Jira needs to know its site (or cloud id), unless every connector goes to one base URL.
    assert credentials_problem("jira", {"email": "a@b", "api_token": "t"}) is not None
    assert credentials_problem("jira", {"email": "a@b", "api_token": "t"}, base_url_set=True) is None
    assert credentials_problem("jira", {"email": "a@b", "api_token": "t", "site_url": "https://x"}) is None
    assert credentials_problem("http", {"anything": "goes"}) is None  # it may call unauthenticated
