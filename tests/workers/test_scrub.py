"""Credentials taken out of what a command reports, in whatever form an upstream echoed them."""

from __future__ import annotations

from core.vault import TenantSecret
from schemas import ErrorCode, ErrorInfo
from workers._scrub import scrub_error, scrub_output


def test_an_echoed_secret_is_scrubbed_where_json_would_escape_it_and_in_keys() -> None:
    secret = TenantSecret({"header_name": "Authorization", "header_value": 'Basic ab"c\\defgh12'}, 1)
    output = {"headers": {"Authorization": 'Basic ab"c\\defgh12'}, 'ab"c\\defgh12': "as a key"}
    assert scrub_output(output, secret) == {"headers": {"Authorization": "***"}, "***": "as a key"}


def test_a_secret_escaped_or_url_encoded_by_the_upstream_is_scrubbed() -> None:
    token = "ya29.abc/def+ghi=="
    secret = TenantSecret({"token": token}, 1)
    for written in ('{"h":"Bearer ya29.abc\\/def+ghi=="}', "next=ya29.abc%2Fdef%2Bghi%3D%3D", "q=ya29.abc%2Fdef%2Bghi%3D%3D&x=1"):
        output = scrub_output({"status": 200, "text": written, "truncated": False}, secret)
        assert "ya29.abc" not in output["text"] and "***" in output["text"], written


def test_a_truncated_echo_cut_inside_a_secret_loses_its_start_too() -> None:
    token = "sk_live_0123456789abcdef"
    secret = TenantSecret({"token": token}, 1)
    text = "x" * 100 + "Authorization: Bearer " + token[:-3]
    output = scrub_output({"status": 200, "text": text, "truncated": True}, secret)
    assert output["text"] == "x" * 100 + "Authorization: Bearer ***"
    # Only a cut text is searched so: a whole reply ending like a secret's start is kept.
    kept = scrub_output({"status": 200, "text": "see sk_live_0123", "truncated": False}, secret)
    assert kept["text"] == "see sk_live_0123"


def test_an_output_without_any_secret_is_returned_as_it_is() -> None:
    output = {"status": 200, "json": {"ok": True}}
    assert scrub_output(output, TenantSecret({"token": "sk_live_0123456789"}, 1)) is output
    assert scrub_output(output, None) is output


def test_an_error_message_naming_a_credential_is_masked() -> None:
    info = ErrorInfo(code=ErrorCode.UPSTREAM_UNAVAILABLE, message="refused key sk_live_0123456789", retryable=True)
    assert scrub_error(info, TenantSecret({"token": "sk_live_0123456789"}, 1)).message == "refused key ***"


def test_a_short_api_key_echoed_by_the_upstream_is_masked_as_in_errors() -> None:
    # Values under 8 characters were left in outputs (errors masked them from 4).
    secret = TenantSecret({"header_name": "X-Api-Key", "header_value": "k7Qz9p1"}, 1)
    output = {"status": 200, "json": {"headers": {"X-Api-Key": "k7Qz9p1", "Authorization": "Bearer k7Qz9p1"}}}
    assert "k7Qz9p1" not in str(scrub_output(output, secret))
