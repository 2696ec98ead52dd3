"""The checks for an earlier attempt's effect, against the emulator over real HTTP.

Slack: the metadata marker, channel names, threads, pagination, the shared reads,
refusals. GitHub: the marker in the issue body, the issue list's pages and Link header.
Jira: the key in an issue entity property, the enhanced JQL search and its page tokens.
Gmail: the key in a header of the sent message, the SENT list and each message's metadata.
Notion: the key in a database's text property, the database query and its cursors
(more in ``test_connectors_find_done_notion.py``).
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from test_connectors_vendors import TENANT, make_call, register
from yarl import URL

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode
from workers.connectors import ConnectorCall, _slack_lookup
from workers.connectors._base import CredentialsExpired, Doubt
from workers.connectors._gmail_lookup import CONCURRENT_GETS, HEADER, GmailLookup, gmail_error
from workers.connectors._gmail_lookup import PAGE_SIZE as GMAIL_PAGE
from workers.connectors._http import Reply
from workers.connectors._slack_lookup import EVENT_TYPE, MAX_PAGES, PAGE_SIZE
from workers.connectors.github import GitHubConnector, _next_page
from workers.connectors.github import marker as github_marker
from workers.connectors.gmail import GmailConnector, build_message, decode_raw, encode_raw
from workers.connectors.jira import PROPERTY, JiraConnector
from workers.connectors.notion import NotionConnector
from workers.connectors.slack import SlackConnector
from workers.emulators import RunningEmulator
from workers.emulators._jira_issues import JqlError, Query, parse_jql

TOKEN = "xoxb-lookup"


class _Calls:
    """Calls of one connector with one token: defaults, overridden per call."""

    def __init__(self, name: str, token: str, **defaults: str) -> None:
        self.name, self.token, self.defaults = name, token, defaults

    def __call__(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession, key: str, **arguments: str
    ) -> ConnectorCall:
        return make_call(
            self.name, emulator, session, self.token, key=key, arguments={**self.defaults, **arguments}
        )


_call = _Calls("slack", TOKEN, channel="#daily", text="summary")
_issue = _Calls("github", "ghp-lookup", owner="octo", repo="hello", title="Bug")
_jira_issue = _Calls("jira", "jira-lookup", project_key="PROJ", summary="Broken build")
_mail = _Calls("gmail", "ya29.lookup", to="team@example.com", subject="Daily", body="Hello")
DATABASE = "2f26ee68-df30-4251-aad4-8ddc420cba3d"
_page = _Calls("notion", "secret_lookup", database_id=DATABASE, title="Daily", key_property="Switchyard key")


def _jira(index_lag: float = 0.0) -> JiraConnector:
    """The Jira connector; the emulator indexes at once unless told otherwise."""
    return JiraConnector(index_lag=index_lag)


def _notion(index_lag: float = 0.0) -> NotionConnector:
    """The Notion connector; the emulator shows new pages at once unless told otherwise."""
    return NotionConnector(index_lag=index_lag)


def _doubt(settled_at: float | None = None) -> Doubt:
    return Doubt(since=time.time() - 60, settled_at=time.time() if settled_at is None else settled_at)


async def test_a_posted_message_is_found_by_its_key_and_no_other(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "slack", TOKEN)
    slack = SlackConnector()
    posted = await slack.execute(_call(emulator, session, "key-1"))
    effects_before = emulator.state.effects["slack"]["key-1"]

    found = await slack.find_done(_call(emulator, session, "key-1"), _doubt())
    missing = await SlackConnector().find_done(_call(emulator, session, "key-2"), _doubt())

    assert found == posted  # the same {channel, ts} the post answered
    assert missing is None
    assert emulator.state.effects["slack"]["key-1"] == effects_before == 1  # reads are no effect
    (message,), _ = emulator.state.slack_history.history(TENANT, posted["channel"], oldest=0, start=0, limit=5)
    assert message["metadata"] == {"event_type": EVENT_TYPE, "event_payload": {"idempotency_key": "key-1"}}


async def test_a_thread_reply_is_found_in_its_thread(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "slack", TOKEN)
    slack = SlackConnector()
    parent = await slack.execute(_call(emulator, session, "parent"))
    reply = await slack.execute(_call(emulator, session, "reply", channel=parent["channel"], thread_ts=parent["ts"]))

    found = await SlackConnector().find_done(
        _call(emulator, session, "reply", channel=parent["channel"], thread_ts=parent["ts"]), _doubt()
    )

    assert reply["thread_ts"] == parent["ts"]
    assert found == reply


async def test_a_message_posted_to_a_user_id_is_found_in_the_direct_message_channel(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    # Slack posts to a user ID in the app's DM with that user (a D... channel); the
    # check read the ID as a channel name, found none and let the post go again.
    register(emulator, "slack", TOKEN)
    slack = SlackConnector()
    await slack.execute(_call(emulator, session, "to-channel"))  # a channel, not listed as a DM
    posted = await slack.execute(_call(emulator, session, "dm-1", channel="U0123ABCD"))

    checker = SlackConnector()
    found = await checker.find_done(_call(emulator, session, "dm-1", channel="U0123ABCD"), _doubt())
    elsewhere = await checker.find_done(_call(emulator, session, "dm-1", channel="U0999WXYZ"), _doubt())

    assert posted["channel"].startswith("D") and found == posted
    assert elsewhere is None  # no DM with that user: nothing read but the list


async def test_one_read_answers_every_key_of_a_channel_until_a_newer_doubt(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "slack", TOKEN)
    slack = SlackConnector()
    keys = [f"k{i}" for i in range(2 * PAGE_SIZE + 10)]  # three pages of history
    posted = {key: await slack.execute(_call(emulator, session, key)) for key in keys}
    settled = time.time()

    checker = SlackConnector()
    found = {key: await checker.find_done(_call(emulator, session, key), _doubt(settled)) for key in keys}
    reads_for_all = checker.lookup.reads
    await checker.find_done(_call(emulator, session, "k0"), _doubt(time.time() + 1))

    assert found == posted
    assert reads_for_all == 1 + 3  # conversations.list, then three history pages, once
    assert checker.lookup.reads == 2 * reads_for_all  # a doubt settled after those reads reads again


async def test_an_unknown_channel_name_means_nothing_was_posted(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "slack", TOKEN)
    slack = SlackConnector()
    assert await slack.find_done(_call(emulator, session, "k", channel="#never-used"), _doubt()) is None
    assert slack.lookup.reads == 1  # the channel list only


async def test_a_channel_name_past_the_history_reads_page_budget_is_still_found(
    emulator: RunningEmulator, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A workspace's channels run to thousands: the list is read further than a channel's
    # history (here scaled down to one channel per page).
    register(emulator, "slack", TOKEN)
    slack = SlackConnector()
    for n in range(MAX_PAGES + 2):
        await slack.execute(_call(emulator, session, f"other-{n}", channel=f"#c{n}"))
    posted = await slack.execute(_call(emulator, session, "late", channel="#late"))
    monkeypatch.setattr(_slack_lookup, "LIST_PAGE_SIZE", 1)

    found = await SlackConnector().find_done(_call(emulator, session, "late", channel="#late"), _doubt())

    assert found == posted


async def test_a_refused_read_raises_like_the_post_would(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "slack", TOKEN)
    emulator.state.add_fault({"connector": "slack", "kind": "403", "count": 1})
    with pytest.raises(PermanentError) as refused:
        await SlackConnector().find_done(_call(emulator, session, f"k-{uuid.uuid4().hex}"), _doubt())
    assert "missing_scope" in str(refused.value)
    assert TOKEN not in str(refused.value)


async def test_the_emulator_reads_back_only_the_tenants_own_channels_by_id(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "slack", TOKEN)
    register(emulator, "slack", "xoxb-other", tenant="other")
    posted = await SlackConnector().execute(_call(emulator, session, "mine"))
    base = f"{emulator.base_url}/api"

    async def read(path: str, token: str) -> dict:
        async with session.get(f"{base}/{path}", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            return await response.json()

    own = await read(f"conversations.history?channel={posted['channel']}", TOKEN)
    other = await read(f"conversations.history?channel={posted['channel']}", "xoxb-other")
    by_name = await read("conversations.history?channel=%23daily", TOKEN)
    listed = await read("conversations.list", "xoxb-other")
    bad_cursor = await read(f"conversations.history?channel={posted['channel']}&cursor=nope", TOKEN)

    assert own["ok"] and [m["ts"] for m in own["messages"]] == [posted["ts"]]
    assert "metadata" not in own["messages"][0]  # only with include_all_metadata
    assert other == {"ok": False, "error": "channel_not_found"}
    assert by_name == {"ok": False, "error": "channel_not_found"}  # history takes IDs
    assert listed["ok"] and listed["channels"] == []
    assert bad_cursor == {"ok": False, "error": "invalid_arguments"}


async def test_malformed_metadata_is_refused_and_posts_nothing(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "slack", TOKEN)
    async with session.post(
        f"{emulator.base_url}/api/chat.postMessage",
        json={"channel": "#daily", "text": "x", "metadata": {"event_type": "", "event_payload": []}},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as response:
        body = await response.json()
    assert body == {"ok": False, "error": "invalid_metadata_format"}
    assert emulator.state.slack_history.channels(TENANT, start=0, limit=10)[0] == []



# connector -> (its class, its calls, upstream reads that answer three keys)
_FOUND = {
    "github": (GitHubConnector, _issue, 1),  # one page of the issue list
    "jira": (_jira, _jira_issue, 1),  # one page of the project's search
    "gmail": (GmailConnector, _mail, 3),  # one page of SENT and each message's metadata
    "notion": (_notion, _page, 1),  # one page of the database's query
}


@pytest.mark.parametrize("name", sorted(_FOUND))
async def test_an_earlier_effect_is_found_by_its_key_and_no_other(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    kind, calls, reads = _FOUND[name]
    register(emulator, name, calls.token)
    done = {key: await kind().execute(calls(emulator, session, key)) for key in ("key-1", "key-2")}

    checker, doubt = kind(), _doubt()
    found = {key: await checker.find_done(calls(emulator, session, key), doubt) for key in ("key-1", "key-2", "key-3")}

    assert found == {**done, "key-3": None}
    assert checker.reads == reads  # one read answered all three
    assert emulator.state.effects[name] == {"key-1": 1, "key-2": 1}  # reads are no effect


async def test_an_issue_body_ends_with_the_marker(emulator: RunningEmulator, session: aiohttp.ClientSession) -> None:
    register(emulator, "github", "ghp-lookup")
    await GitHubConnector().execute(_issue(emulator, session, "key-1", body="It breaks."))
    (issue,) = emulator.state.github_issues.listed(
        TENANT, "octo", "hello", state="all", since=None, newest_first=False, page=1, per_page=1
    )[0]
    assert issue["body"] == f"It breaks.\n\n{github_marker('key-1')}"


async def test_the_longest_body_a_command_may_give_fits_github_with_its_marker(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "github", "ghp-lookup")
    key = "sy-" + "f" * 40  # as upstream_idempotency_key makes them
    longest = GitHubConnector.operations["issues.create"].input_schema["properties"]["body"]["maxLength"]
    done = await GitHubConnector().execute(_issue(emulator, session, key, body="x" * longest))
    assert await GitHubConnector().find_done(_issue(emulator, session, key, body="x" * longest), _doubt()) == done
    # Over GitHub's 65,536 characters the emulator answers as GitHub does, without cutting.
    async with session.post(
        f"{emulator.base_url}/repos/octo/hello/issues", json={"title": "t", "body": "x" * 65_537},
        headers={"Authorization": "Bearer ghp-lookup"},
    ) as response:  # fmt: skip
        assert response.status == 422
        assert (await response.json())["errors"][0]["message"].startswith("body is too long")


@pytest.mark.parametrize("name", ["github", "jira", "notion"])  # Link header; nextPageToken; next_cursor
async def test_the_issues_are_read_page_by_page(
    name: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    kind, token, call = {
        "github": (GitHubConnector, "ghp-lookup", _issue), "jira": (_jira, "jira-lookup", _jira_issue),
        "notion": (_notion, "secret_lookup", _page),
    }[name]  # fmt: skip
    register(emulator, name, token)
    connector = kind()
    opened = {f"k{i}": await connector.execute(call(emulator, session, f"k{i}")) for i in range(230)}

    checker = kind()
    oldest = await checker.find_done(call(emulator, session, "k0"), _doubt())

    assert oldest == opened["k0"]
    assert checker.reads == 3  # 100 + 100 + 30, newest first


def test_a_next_page_elsewhere_is_not_followed() -> None:
    here = URL("https://api.github.com/repos/o/r/issues?page=1")

    def reply(link: str) -> SimpleNamespace:
        return SimpleNamespace(headers={"Link": link})

    assert _next_page(reply('<https://api.github.com/repos/o/r/issues?page=2>; rel="next"'), here) == URL(
        "https://api.github.com/repos/o/r/issues?page=2"
    )
    assert _next_page(reply('<https://evil.example/steal?page=2>; rel="next"'), here) is None
    assert _next_page(reply('</repos/o/r/issues?page=3>; rel="next"'), here) == URL(
        "https://api.github.com/repos/o/r/issues?page=3"
    )
    assert _next_page(reply('<https://api.github.com/x?page=9>; rel="last"'), here) is None


async def test_a_marker_copied_into_another_body_does_not_count(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "github", "ghp-lookup")
    github = GitHubConnector()
    await github.execute(_issue(emulator, session, "copier", body=f"see {github_marker('victim')} above"))
    await github.execute(_issue(emulator, session, "quoter", body=f"quoted:\n{github_marker('victim')}"))

    assert await GitHubConnector().find_done(_issue(emulator, session, "victim"), _doubt()) is None
    bodies = [i["body"] for i in emulator.state.github_issues.listed(
        TENANT, "octo", "hello", state="all", since=None, newest_first=False, page=1, per_page=10
    )[0]]  # fmt: skip
    assert bodies == [f"see  above\n\n{github_marker('copier')}", f"quoted:\n\n{github_marker('quoter')}"]



async def test_a_jira_search_answers_for_its_own_project_only(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "jira", "jira-lookup")
    elsewhere = await _jira().execute(_jira_issue(emulator, session, "key-4", project_key="OPS"))

    checker, doubt = _jira(), _doubt()
    in_ops = await checker.find_done(_jira_issue(emulator, session, "key-4", project_key="OPS"), doubt)
    in_proj = await checker.find_done(_jira_issue(emulator, session, "key-4"), doubt)

    assert (in_ops, in_proj) == (elsewhere, None)
    assert checker.reads == 2  # one search per project
    searches = [c for c in emulator.state.calls if c["path"] == "/rest/api/3/search/jql"]
    assert [c["status"] for c in searches] == [200, 200]


async def test_issues_created_before_the_command_are_not_searched(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "jira", "jira-lookup")
    jira = _jira()
    await jira.execute(_jira_issue(emulator, session, "old"))
    for issue in emulator.state.jira_issues._issues.entries((TENANT, "PROJ")):
        issue["created"] -= 3_600  # an hour before the command

    assert await _jira().find_done(_jira_issue(emulator, session, "old"), _doubt()) is None


async def test_a_refused_jira_search_gives_up_the_check_and_a_401_is_no_expired_token(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "jira", "jira-lookup")
    with pytest.raises(PermanentError):
        await _jira().find_done(_jira_issue(emulator, session, "k", project_key="MISSING"), _doubt())
    # Jira answers a token without the read scope 401: the check gives up (the runtime
    # then creates as before) instead of failing the command as if the token had expired.
    unscoped = make_call("jira", emulator, session, "no-read-scope", key="k",
                         arguments={"project_key": "PROJ", "summary": "s"})  # fmt: skip
    with pytest.raises(PermanentError) as refused:
        await _jira().find_done(unscoped, _doubt())
    assert not isinstance(refused.value, CredentialsExpired)


async def test_a_search_waits_until_jiras_index_has_caught_up(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "jira", "jira-lookup")
    emulator.state.jira_issues.index_lag = 3.0
    created = await _jira().execute(_jira_issue(emulator, session, "fresh"))
    doubt = _doubt()  # the attempt in doubt was sent now

    # Searched at once (the next whole second): the issue is not in the index yet.
    assert await _jira(index_lag=0.0).find_done(_jira_issue(emulator, session, "fresh"), doubt) is None
    # Searched once the index has caught up; the runtime's bound on the check allows the wait.
    patient = _jira(index_lag=3.5)
    # 3.5 s on a whole-second grid, less the time gone (however slow the machine was).
    ready = math.ceil(doubt.settled_at + 3.5)
    before = time.time()
    wait = patient.check_wait(doubt)
    assert max(0.0, ready - time.time()) <= wait <= max(0.0, ready - before)
    assert await patient.find_done(_jira_issue(emulator, session, "fresh"), doubt) == created
    assert time.time() >= doubt.settled_at + 3.5
    assert patient.check_wait(doubt) == 0.0 and GmailConnector().check_wait(doubt) == 0.0


async def test_the_emulated_search_refuses_jql_it_cannot_parse_and_shows_only_what_is_asked(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "jira", "jira-lookup")
    created = await _jira().execute(_jira_issue(emulator, session, "shown"))
    url = f"{emulator.base_url}/rest/api/3/search/jql"
    headers = {"Authorization": "Bearer jira-lookup"}

    async def search(body: object) -> tuple[int, dict]:
        async with session.post(url, json=body, headers=headers) as response:
            return response.status, await response.json()

    refused = [
        await search({"jql": 'summary ~ "build"'}),
        await search({"jql": ""}),
        await search({"jql": "project = PROJ", "nextPageToken": "not-ours"}),
        await search({"jql": "project = PROJ", "properties": ["a", "b", "c", "d", "e", "f"]}),
    ]
    plain = await search({"jql": "project = PROJ"})
    asked = await search({"jql": 'project = "PROJ" AND created >= -5m', "fields": ["created"], "properties": [PROPERTY]})
    async with session.get(url, params={"jql": "project = PROJ ORDER BY created DESC"}, headers=headers) as response:
        by_get = (response.status, await response.json())
    async with session.post(url, json={"jql": "project = PROJ"}) as response:
        anonymous = response.status

    async with session.post(f"{emulator.base_url}/rest/api/3/issue", headers=headers, json={
        "fields": {"project": {"key": "PROJ"}, "summary": "s", "issuetype": {"name": "Task"}},
        "properties": [{"key": PROPERTY, "value": "x" * 40_000}],
    }) as response:  # fmt: skip
        oversized = (response.status, await response.json())

    assert [status for status, _ in refused] == [400, 400, 400, 400]
    assert all(body["errorMessages"] for _, body in refused)
    assert oversized[0] == 400 and "properties" in oversized[1]["errors"]
    assert plain == (200, {"issues": [{**created, "fields": {}}], "isLast": True})
    (issue,) = asked[1]["issues"]
    assert issue["properties"] == {PROPERTY: {"idempotency_key": "shown"}}
    assert issue["fields"]["created"].endswith("+0000")
    assert by_get == (200, {"issues": [{**created, "fields": {}}], "isLast": True})
    assert anonymous == 401


def test_the_emulated_jql_is_the_subset_the_connector_sends() -> None:
    now = 1_000_000.0
    assert parse_jql('project = "PROJ" AND created >= "-15m" ORDER BY created DESC', now=now) == Query(
        "PROJ", now - 900, newest_first=True
    )
    assert parse_jql("project=OPS and created>=-2h order by created asc", now=now) == Query(
        "OPS", now - 7_200, newest_first=False
    )
    assert parse_jql("project = OPS AND created >= -1w", now=now).created_after == now - 604_800
    assert parse_jql("project = OPS", now=now) == Query("OPS", None, newest_first=False)
    for jql in ('project = "A" OR project = "B"', "created >= -1d", 'project = A AND created >= "2026-11-28"',
                "project = A ORDER BY key DESC", 'project = "A" AND created >= "-5m'):  # fmt: skip
        with pytest.raises(JqlError):
            parse_jql(jql, now=now)



async def test_the_key_rides_in_a_header_of_the_sent_message(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    message = build_message(to="a@example.com", subject="s", body="b")
    message[HEADER] = "sy-abc"
    assert decode_raw(encode_raw(message))[HEADER] == "sy-abc"

    register(emulator, "gmail", "ya29.lookup")
    await GmailConnector().execute(_mail(emulator, session, "key-1"))
    (sent,) = emulator.state.gmail_sent.newest_first(TENANT)
    assert [h for h in sent["headers"] if h["name"] == HEADER] == [{"name": HEADER, "value": "key-1"}]


async def test_the_mailbox_is_read_back_to_the_submission_only(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "gmail", "ya29.lookup")
    gmail = GmailConnector()
    sent = {f"k{i}": await gmail.execute(_mail(emulator, session, f"k{i}")) for i in range(GMAIL_PAGE + 30)}
    # The newest 50 were sent after the command's submission; the rest an hour before it.
    for message in list(emulator.state.gmail_sent.newest_first(TENANT))[50:]:
        message["internalDate"] = str(int((time.time() - 3_600) * 1000))

    recent = GmailConnector()
    newest = f"k{GMAIL_PAGE + 29}"
    assert await recent.find_done(_mail(emulator, session, newest), _doubt()) == sent[newest]
    # One list page, then 8 reads at a time until a whole batch is older than the submission.
    assert recent.reads == 1 + (math.ceil(50 / CONCURRENT_GETS) + 1) * CONCURRENT_GETS

    later = GmailConnector()  # a command submitted after every one of those was sent
    assert await later.find_done(_mail(emulator, session, "new"), Doubt(since=time.time(), settled_at=time.time())) is None
    assert later.reads == 1 + CONCURRENT_GETS

    everything = GmailConnector()
    old = Doubt(since=time.time() - 7_200, settled_at=time.time())
    assert await everything.find_done(_mail(emulator, session, "k0"), old) == sent["k0"]
    assert everything.reads == 2 + GMAIL_PAGE + 30  # both pages of the list


async def test_an_older_message_among_newer_ones_does_not_end_the_read(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "gmail", "ya29.lookup")
    gmail = GmailConnector()
    sent = {f"k{i}": await gmail.execute(_mail(emulator, session, f"k{i}")) for i in range(30)}
    # Mail imported with an old date, listed first among the newest.
    next(emulator.state.gmail_sent.newest_first(TENANT))["internalDate"] = str(int((time.time() - 3_600) * 1000))

    assert await GmailConnector().find_done(_mail(emulator, session, "k15"), _doubt()) == sent["k15"]


async def test_a_message_deleted_since_the_list_is_skipped(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "gmail", "ya29.lookup")
    call = _mail(emulator, session, "k")
    messages = URL(f"{emulator.base_url}/gmail/v1/users/me/messages")
    headers = {"Authorization": "Bearer ya29.lookup"}
    assert await GmailLookup()._metadata(call, messages / "0000000000000000", headers) is None


def test_gmail_rate_limits_by_403_are_retried_and_other_403s_are_not() -> None:
    def reply(reason: str) -> Reply:
        body = {"error": {"code": 403, "errors": [{"domain": "usageLimits", "reason": reason}]}}
        return Reply(403, CIMultiDictProxy(CIMultiDict({"Retry-After": "2"})), orjson.dumps(body), False)

    for reason in ("userRateLimitExceeded", "rateLimitExceeded", "dailyLimitExceeded", "quotaExceeded"):
        with pytest.raises(RetryableError) as limited:
            gmail_error(reply(reason), "gmail")
        assert limited.value.retry_after == 2.0
    with pytest.raises(PermanentError):
        gmail_error(reply("insufficientPermissions"), "gmail")
    with pytest.raises(PermanentError):
        gmail_error(Reply(403, CIMultiDictProxy(CIMultiDict()), b"<html>", False), "gmail")


def test_gmail_sending_limits_wait_for_the_time_their_message_names() -> None:
    # A mailbox past its daily sending limit answers 429 "with time to retry" in the
    # message, for hours; retried on the tier delays it failed again and again.
    later = datetime.now(UTC) + timedelta(hours=2)
    stamp = later.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    body = {"error": {"code": 429, "message": f"User-rate limit exceeded.  Retry after {stamp} (Mail sending)",
                      "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded"}]}}  # fmt: skip
    with pytest.raises(RetryableError) as limited:
        gmail_error(Reply(429, CIMultiDictProxy(CIMultiDict()), orjson.dumps(body), False), "gmail")
    assert limited.value.code is ErrorCode.UPSTREAM_RATE_LIMITED
    assert 7_190 < (limited.value.retry_after or 0) <= 7_200
    # A Retry-After header wins; a 429 without either waits on the tier delays.
    with pytest.raises(RetryableError) as headed:
        gmail_error(Reply(429, CIMultiDictProxy(CIMultiDict({"Retry-After": "5"})), orjson.dumps(body), False), "gmail")
    assert headed.value.retry_after == 5.0
    with pytest.raises(RetryableError) as bare:
        gmail_error(Reply(429, CIMultiDictProxy(CIMultiDict()), b"", False), "gmail")
    assert bare.value.retry_after is None


async def test_a_refused_mailbox_read_raises_like_the_send_would(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "gmail", "ya29.lookup")
    emulator.state.add_fault({"connector": "gmail", "kind": "403"})
    with pytest.raises(PermanentError):
        await GmailConnector().find_done(_mail(emulator, session, "k"), _doubt())


async def test_the_emulated_mailbox_answers_in_gmails_shapes(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    register(emulator, "gmail", "ya29.lookup")
    sent = await GmailConnector().execute(_mail(emulator, session, "shown"))
    base = f"{emulator.base_url}/gmail/v1/users/me/messages"
    headers = {"Authorization": "Bearer ya29.lookup"}

    async def get(url: str, **params: str) -> tuple[int, dict]:
        async with session.get(url, params=params, headers=headers) as response:
            return response.status, await response.json()

    listed = await get(base, labelIds="SENT")
    metadata = await get(f"{base}/{sent['id']}", format="metadata", metadataHeaders=HEADER)
    refused = [await get(base, q="in:sent"), await get(base, pageToken="nope"),
               await get(f"{base}/{sent['id']}", format="raw"), await get(f"{base}/0000")]  # fmt: skip
    empty = await get(base, labelIds="INBOX")

    assert listed == (200, {"resultSizeEstimate": 1, "messages": [{"id": sent["id"], "threadId": sent["threadId"]}]})
    assert metadata[0] == 200
    assert metadata[1]["payload"]["headers"] == [{"name": HEADER, "value": "shown"}]
    assert metadata[1]["labelIds"] == ["SENT"] and int(metadata[1]["internalDate"]) > 0
    assert [status for status, _ in refused] == [400, 400, 400, 404]
    assert empty == (200, {"resultSizeEstimate": 0})
