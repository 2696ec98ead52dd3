"""Results of a later release (a field added, top-level or nested) are read, not dropped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson

from core.settings import load_settings
from ingress.results import ResultsFeed
from ingress.testing import echo_result
from schemas import Command, CommandSource, Result


def _later_release_result(command_id: str) -> bytes:
    now = datetime.now(UTC)
    command = Command(
        command_id=command_id, tenant_id="acme", space_id="main", user_id="u", role="member", action="echo",
        idempotency_key="k", submitted_at=now, deadline=now + timedelta(minutes=1), source=CommandSource.REST,
    )
    data = orjson.loads(echo_result(command).to_bytes())
    data["new_optional_field"] = {"added": "later"}  # README: an optional field is a compatible change
    data["times"]["queued_at"] = data["times"]["finished_at"]
    return orjson.dumps(data)


def test_the_result_schema_reads_fields_it_does_not_know_as_absent() -> None:
    result = Result.from_bytes(_later_release_result("c1-later"))
    assert result.command_id == "c1-later" and result.ok
    assert "new_optional_field" not in orjson.loads(result.to_bytes())


async def test_a_result_of_a_later_release_answers_polls_and_waiting_calls() -> None:
    # Workers are upgraded before the ingress: until it is, its polls must still see
    # the Results they write (they stayed pending, or answered 404).
    feed = ResultsFeed(load_settings({}))
    heard: list[str] = []
    feed.listeners.append(lambda head, raw: heard.append(head.command_id))
    waiting = asyncio.create_task(feed.wait("c2-waited", 5.0, lambda result: True, tenant_id="acme"))
    await asyncio.sleep(0)
    for offset, command_id in enumerate(("c1-polled", "c2-waited")):
        feed.apply(SimpleNamespace(value=_later_release_result(command_id), partition=0, offset=offset))
    polled = feed.get("c1-polled", lambda result: True)
    assert polled is not None and polled.ok
    waited = await asyncio.wait_for(waiting, 5)
    assert waited is not None and waited.command_id == "c2-waited"
    assert heard == ["c1-polled", "c2-waited"]
