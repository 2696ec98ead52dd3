"""Notion's check for an earlier attempt's effect, against the emulator over real HTTP:
the key in the database's ``key_property``, the database query, what it cannot check,
refusals, and the emulated query itself."""

from __future__ import annotations

import math
import time

import aiohttp
import pytest
from test_connectors_find_done import DATABASE, _doubt, _notion, _page
from test_connectors_vendors import TENANT, make_call, register

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode
from workers.connectors._base import CredentialsExpired, Doubt
from workers.connectors._shared_reads import after_index
from workers.connectors.notion import MAX_PAGES, PAGE_SIZE
from workers.emulators import RunningEmulator
from workers.emulators._notion_pages import QueryError, page_filter

TOKEN = "secret_lookup"
KEY_PROPERTY = "Switchyard key"


async def test_the_key_rides_in_the_named_text_property(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    created = await _notion().execute(_page(emulator, session, "key-1", title="Standup"))

    (stored,) = emulator.state.notion_pages._pages.entries((TENANT, DATABASE.replace("-", "")))
    assert stored["id"] == created["id"]
    assert stored["properties"] == {
        "Name": {"title": [{"type": "text", "text": {"content": "Standup"}}]},
        KEY_PROPERTY: {"rich_text": [{"type": "text", "text": {"content": "key-1"}}]},
    }


async def test_without_a_key_property_there_is_nothing_to_look_for(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    plain = {"database_id": DATABASE, "title": "Standup"}
    under_a_page = {"parent_page_id": DATABASE, "title": "Standup"}
    for arguments in (plain, under_a_page):
        await _notion().execute(_call(emulator, session, arguments))
    checker = _notion()

    for arguments in (plain, under_a_page):
        assert await checker.find_done(_call(emulator, session, arguments), _doubt()) is None
    assert checker.reads == 0
    assert emulator.state.effects["notion"] == {"key-1": 2}  # the check cannot stop a second page


def _call(emulator: RunningEmulator, session: aiohttp.ClientSession, arguments: dict[str, str], token: str = TOKEN):
    return make_call("notion", emulator, session, token, key="key-1", arguments=arguments)


async def test_a_key_property_needs_a_database_and_another_name_than_the_title(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    with pytest.raises(PermanentError) as under_a_page:
        await _notion().execute(_call(
            emulator, session, {"parent_page_id": DATABASE, "title": "t", "key_property": KEY_PROPERTY}
        ))  # fmt: skip
    with pytest.raises(PermanentError) as on_the_title:
        await _notion().execute(_page(emulator, session, "k", key_property="Name"))

    assert under_a_page.value.code is on_the_title.value.code is ErrorCode.INVALID_ARGUMENTS
    assert "database_id" in str(under_a_page.value) and "title property" in str(on_the_title.value)
    assert "notion" not in emulator.state.effects


async def test_a_query_answers_for_its_own_database_and_property_only(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    other = "9b3c4c1e-0f0a-4c55-9a47-6b1a6f0e2d11"
    elsewhere = await _notion().execute(_page(emulator, session, "key-4", database_id=other))
    renamed = await _notion().execute(_page(emulator, session, "key-5", key_property="Key"))

    checker, doubt = _notion(), _doubt()
    in_other = await checker.find_done(_page(emulator, session, "key-4", database_id=other), doubt)
    in_ours = await checker.find_done(_page(emulator, session, "key-4"), doubt)
    by_other_name = await checker.find_done(_page(emulator, session, "key-5"), doubt)
    by_its_name = await checker.find_done(_page(emulator, session, "key-5", key_property="Key"), doubt)

    assert (in_other, in_ours, by_other_name, by_its_name) == (elsewhere, None, None, renamed)
    assert checker.reads == 3  # one query per database and property


async def test_pages_created_before_the_command_are_not_queried(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    await _notion().execute(_page(emulator, session, "old"))
    for page in emulator.state.notion_pages._pages.entries((TENANT, DATABASE.replace("-", ""))):
        page["created"] -= 3_600  # an hour before the command

    assert await _notion().find_done(_page(emulator, session, "old"), _doubt()) is None


async def test_a_refused_query_gives_up_the_check_and_a_bad_token_fails_as_the_create_would(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    # Not shared with the integration (Notion answers 404): the runtime creates as before.
    missing = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(PermanentError) as refused:
        await _notion().find_done(_page(emulator, session, "k", database_id=missing), _doubt())
    assert not isinstance(refused.value, CredentialsExpired)
    emulator.state.add_fault({"connector": "notion", "kind": "403", "count": 1})
    with pytest.raises(PermanentError) as forbidden:  # no "read content" capability
        await _notion().find_done(_page(emulator, session, "k"), _doubt())
    assert not isinstance(forbidden.value, CredentialsExpired)
    revoked = _call(emulator, session, {"database_id": DATABASE, "title": "t", "key_property": KEY_PROPERTY},
                    token="secret_revoked")  # fmt: skip
    with pytest.raises(CredentialsExpired):  # the same token would not create a page either
        await _notion().find_done(revoked, _doubt())


async def test_a_query_waits_until_new_pages_show(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    emulator.state.notion_pages.index_lag = 3.0
    created = await _notion().execute(_page(emulator, session, "fresh"))
    doubt = _doubt()

    assert await _notion(index_lag=0.0).find_done(_page(emulator, session, "fresh"), doubt) is None
    patient = _notion(index_lag=3.5)
    # 3.5 s on a whole-second grid, less the time gone (however slow the machine was).
    ready = math.ceil(doubt.settled_at + 3.5)
    before = time.time()
    wait = patient.check_wait(doubt)
    assert max(0.0, ready - time.time()) <= wait <= max(0.0, ready - before)
    assert await patient.find_done(_page(emulator, session, "fresh"), doubt) == created
    assert time.time() >= doubt.settled_at + 3.5


async def test_the_emulated_query_refuses_what_it_cannot_serve_and_shows_plain_text(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    created = await _notion().execute(_page(emulator, session, "shown", title="Standup"))
    headers = {"Authorization": f"Bearer {TOKEN}", "Notion-Version": "2022-06-28"}

    async def query(body: object) -> tuple[int, dict]:
        url = f"{emulator.base_url}/v1/databases/{DATABASE}/query"
        async with session.post(url, json=body, headers=headers) as reply:
            return reply.status, await reply.json()

    status, answer = await query({"filter": {"property": KEY_PROPERTY, "rich_text": {"equals": "shown"}}})
    assert status == 200 and answer["has_more"] is False and answer["next_cursor"] is None
    (page,) = answer["results"]
    assert page["id"] == created["id"] and page["created_time"].endswith(":00.000Z")
    assert page["properties"][KEY_PROPERTY]["rich_text"][0]["plain_text"] == "shown"
    assert page["properties"]["Name"]["type"] == "title"
    assert (await query({"filter": {"property": KEY_PROPERTY, "rich_text": {"equals": "x"}}}))[1]["results"] == []
    for refused in (
        {"filter": {"property": KEY_PROPERTY, "number": {"equals": 1}}},
        {"filter": {"or": []}},
        {"sorts": [{"property": "Name", "direction": "ascending"}]},
        {"page_size": 101},
        {"start_cursor": "not-ours"},
    ):
        status, error = await query(refused)
        assert (status, error["object"], error["code"]) == (400, "error", "validation_error"), refused
    assert emulator.state.effects["notion"] == {"shown": 1}  # queries are no effect

    async with session.post(f"{emulator.base_url}/v1/pages", headers=headers, json={
        "parent": {"database_id": DATABASE}, "properties": {KEY_PROPERTY: "not a property value"},
    }) as reply:  # fmt: skip
        assert (reply.status, (await reply.json())["code"]) == (400, "validation_error")
    assert (await query({}))[0] == 200  # nothing malformed was kept


def test_the_emulated_filter_counts_creation_times_in_whole_minutes() -> None:
    on_the_minute = 1_800_000_000.0  # a whole minute
    page = {"created": on_the_minute + 59, "properties": {}}
    since = "2027-01-15T08:00:00.000Z"  # 1_800_000_000

    assert page_filter({"timestamp": "created_time", "created_time": {"on_or_after": since}})(page)
    assert not page_filter({"timestamp": "created_time", "created_time": {"after": since}})(page)
    with pytest.raises(QueryError):
        page_filter({"timestamp": "created_time", "created_time": {"on_or_after": since, "before": since}})


async def test_past_the_reads_page_limit_the_key_is_asked_for_alone(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    connector = _notion()
    first = await connector.execute(_page(emulator, session, "first"))
    for i in range(MAX_PAGES * PAGE_SIZE):  # newer pages fill the shared read
        await connector.execute(_page(emulator, session, f"later-{i}"))

    # A person duplicated our first page later on; the copy carries our key too.
    (stored, *_) = emulator.state.notion_pages._pages.entries((TENANT, DATABASE.replace("-", "")))
    emulator.state.notion_pages.add(TENANT, DATABASE, {**stored, "id": "copy", "url": "https://www.notion.so/copy"})

    checker, doubt = _notion(), _doubt()
    assert await checker.find_done(_page(emulator, session, "first"), doubt) == first
    assert checker.reads == MAX_PAGES + 1  # the shared read (it has the copy), then the key alone
    assert await checker.find_done(_page(emulator, session, "later-0"), doubt) is not None
    assert await checker.find_done(_page(emulator, session, "never"), doubt) is None
    assert checker.reads == MAX_PAGES + 3  # one query for each key past a cut-short read


async def test_a_page_a_person_duplicated_does_not_hide_the_one_we_created(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    ours = await _notion().execute(_page(emulator, session, "dup"))
    # "Duplicate" in Notion's UI copies every property, our key too.
    (stored,) = emulator.state.notion_pages._pages.entries((TENANT, DATABASE.replace("-", "")))
    emulator.state.notion_pages.add(TENANT, DATABASE, {**stored, "id": "copy", "url": "https://www.notion.so/copy"})

    assert await _notion().find_done(_page(emulator, session, "dup"), _doubt()) == ours


async def test_another_tenants_rows_in_a_database_of_the_same_id_are_not_ours(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "notion", TOKEN)
    register(emulator, "notion", "secret_other", tenant="other")
    await _notion().execute(_call(emulator, session, {
        "database_id": DATABASE, "title": "t", "key_property": KEY_PROPERTY,
    }, token="secret_other"))  # fmt: skip

    assert await _notion().find_done(_page(emulator, session, "key-1"), _doubt()) is None


def test_a_doubt_is_rounded_to_the_reads_whole_minutes_and_seconds() -> None:
    assert after_index(Doubt(since=1_800_000_059.5, settled_at=1_800_000_100.2), 5.0) == Doubt(
        since=1_800_000_000.0, settled_at=1_800_000_106.0
    )


async def test_a_conflict_error_is_retried_not_a_failure(emulator: RunningEmulator, session: aiohttp.ClientSession) -> None:
    register(emulator, "notion", TOKEN)
    emulator.state.add_fault({"connector": "notion", "kind": "409", "count": 1})
    call = _call(emulator, session, {"database_id": DATABASE, "title": "t", "key_property": KEY_PROPERTY})
    with pytest.raises(RetryableError) as conflict:  # Notion: "a data collision ... try again"
        await _notion().execute(call)
    assert conflict.value.http_status == 409
    assert (await _notion().execute(call))["id"]  # and the retry creates the page


async def test_a_data_source_of_a_several_source_database_takes_the_row_and_answers_the_check(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    # Under 2022-06-28 Notion refuses a database parent and query for a database with
    # several data sources; the source is named instead, with the version that knows it.
    register(emulator, "notion", TOKEN)
    source = "7d2f1c3e-0b1a-4c5d-9e8f-0123456789ab"
    arguments = {"data_source_id": source, "title": "Standup", "key_property": KEY_PROPERTY}
    created = await _notion().execute(_call(emulator, session, arguments))
    checker = _notion()

    found = await checker.find_done(_call(emulator, session, arguments), _doubt())
    missing = await checker.find_done(
        make_call("notion", emulator, session, TOKEN, key="key-2", arguments=arguments), _doubt()
    )

    assert found == created and missing is None
    (stored,) = emulator.state.notion_pages._pages.entries((TENANT, source.replace("-", "")))
    assert stored["parent"] == {"type": "data_source_id", "data_source_id": source}
    queried = [c["path"] for c in emulator.state.calls if c["method"] == "POST" and c["path"].endswith("/query")]
    assert queried and set(queried) == {f"/v1/data_sources/{source}/query"}
