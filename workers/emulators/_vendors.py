"""Vendor endpoints: each answers with the real API's success and error shapes.

A vendor knows how to find the token in a request, how its API says 401/429/5xx, and
how to validate and answer one call. Convention for "does not exist": a Slack channel,
GitHub owner or repository, or Jira project whose name starts with ``missing``
(``MISSING`` for Jira), and a Notion parent ID starting with ``00000000``. A GitHub
repository whose name starts with ``no-push-`` stands for one the token may not push to:
an issue is opened, its labels dropped, as GitHub does.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from workers.connectors.gmail import decode_raw
from workers.connectors.notion import DATA_SOURCES_VERSION, utf16_length

from ._gmail_mailbox import gmail_read
from ._jira_issues import jira_search
from ._notion_pages import notion_query
from ._slack_history import slack_read, valid_metadata
from ._state import EmulatorState

__all__ = ["VENDORS", "Vendor", "json_response"]


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _retry_headers(retry_after: float | None) -> dict[str, str] | None:
    return None if retry_after is None else {"Retry-After": f"{retry_after:g}"}


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() in ("bearer", "token") else None


class Vendor:
    """One emulated API. Subclasses override the shapes that differ."""

    name = ""
    # False: calls without credentials are served (webhooks), tenant unknown.
    requires_auth = True

    def token(self, request: web.Request) -> str | None:
        return _bearer(request)

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        return json_response(status, {"message": "error"}, _retry_headers(retry_after))

    def unauthorized(self, expired: bool) -> web.Response:
        return self.error(401)

    def summary(self, data: Any) -> dict[str, Any]:
        return {"keys": sorted(data)[:20] if isinstance(data, dict) else []}

    def has_effect(self, request: web.Request) -> bool:
        """Whether a 2xx answer to this request is a side effect (not a read)."""
        return True

    def handle(
        self, state: EmulatorState, tenant: str, request: web.Request, data: Any
    ) -> web.Response:
        raise NotImplementedError


class Slack(Vendor):
    name = "slack"

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        refused = {400: "invalid_arguments", 403: "missing_scope", 404: "channel_not_found"}
        if status in refused:  # Slack reports refusals as HTTP 200 with ok: false
            return json_response(200, {"ok": False, "error": refused[status]})
        code = "ratelimited" if status == 429 else "internal_error"
        return json_response(status, {"ok": False, "error": code}, _retry_headers(retry_after))

    def unauthorized(self, expired: bool) -> web.Response:
        # Slack answers auth failures with HTTP 200 and ok: false.
        return json_response(
            200, {"ok": False, "error": "token_expired" if expired else "invalid_auth"}
        )

    def summary(self, data: Any) -> dict[str, Any]:
        base = super().summary(data)
        if isinstance(data, dict):
            base["channel"] = str(data.get("channel", ""))[:80]
        return base

    def has_effect(self, request: web.Request) -> bool:
        return request.path.endswith("/chat.postMessage")

    def handle(
        self, state: EmulatorState, tenant: str, request: web.Request, data: Any
    ) -> web.Response:
        method = request.path.rsplit("/", 1)[-1]
        if method != "chat.postMessage":
            params = {**request.query, **(data if isinstance(data, dict) else {})}
            return slack_read(state.slack_history, tenant, method, params)
        if not isinstance(data, dict):
            return json_response(200, {"ok": False, "error": "invalid_arguments"})
        channel = data.get("channel")
        if not isinstance(channel, str) or not channel or channel.lstrip("#").startswith("missing"):
            return json_response(200, {"ok": False, "error": "channel_not_found"})
        if not data.get("text") and not data.get("blocks"):
            return json_response(200, {"ok": False, "error": "no_text"})
        metadata = data.get("metadata")
        if metadata is not None and not valid_metadata(metadata):
            return json_response(200, {"ok": False, "error": "invalid_metadata_format"})
        number = next(state.sequence)
        ts = f"{int(time.time())}.{number % 1_000_000:06d}"
        is_id = channel[:1] in "CGD" and channel.isupper()
        # A user ID: Slack posts to the app's direct message channel with that user.
        user = channel if channel[:1] in "UW" and channel.isupper() and channel.isalnum() else None
        prefix = "D" if user else "C"
        channel_id = (
            channel
            if is_id
            else (prefix + uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{channel}").hex[:10].upper())
        )
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": str(data.get("text", ""))[:200],
            "ts": ts,
            "bot_id": "B0EMULATOR",
        }
        if data.get("thread_ts"):
            message["thread_ts"] = data["thread_ts"]
        stored = {**message, "metadata": metadata} if metadata is not None else message
        name = None if is_id or user else channel.lstrip("#")
        state.slack_history.post(tenant, channel_id, name, stored, user=user)
        return json_response(200, {"ok": True, "channel": channel_id, "ts": ts, "message": message})


class Gmail(Vendor):
    name = "gmail"

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        reason, state = {
            429: ("rateLimitExceeded", "RESOURCE_EXHAUSTED"),
            403: ("insufficientPermissions", "PERMISSION_DENIED"),
            400: ("invalidArgument", "INVALID_ARGUMENT"),
            503: ("backendError", "UNAVAILABLE"),
        }.get(status, ("backendError", "INTERNAL"))
        body = {
            "error": {
                "code": status,
                "message": reason,
                "errors": [{"reason": reason}],
                "status": state,
            }
        }
        return json_response(status, body, _retry_headers(retry_after))

    def unauthorized(self, expired: bool) -> web.Response:
        body = {
            "error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
                "errors": [
                    {"message": "Invalid Credentials", "domain": "global", "reason": "authError"}
                ],
                "status": "UNAUTHENTICATED",
            }
        }
        return json_response(
            401, body, {"WWW-Authenticate": 'Bearer realm="emulator", error="invalid_token"'}
        )

    def summary(self, data: Any) -> dict[str, Any]:
        raw = data.get("raw") if isinstance(data, dict) else None
        return {
            "keys": super().summary(data)["keys"],
            "raw_chars": len(raw) if isinstance(raw, str) else 0,
        }

    def handle(
        self, state: EmulatorState, tenant: str, request: web.Request, data: Any
    ) -> web.Response:
        if request.method == "GET":
            return gmail_read(state.gmail_sent, tenant, request)
        raw = data.get("raw") if isinstance(data, dict) else None
        try:
            message = decode_raw(raw) if isinstance(raw, str) and raw else None
        except ValueError:
            message = None
        if message is None or not message.get("To"):
            body = {
                "error": {"code": 400, "message": "Invalid To header", "status": "INVALID_ARGUMENT"}
            }
            return json_response(400, body)
        ident = f"{(int(time.time() * 1000) << 12 | next(state.sequence) & 0xFFF):016x}"[-16:]
        state.gmail_sent.add(tenant, ident, message)
        return json_response(200, {"id": ident, "threadId": ident, "labelIds": ["SENT"]})

    def has_effect(self, request: web.Request) -> bool:
        return request.method == "POST"


class Notion(Vendor):
    name = "notion"

    @staticmethod
    def _error(
        status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"object": "error", "status": status, "code": code, "message": message}
        return json_response(status, body, headers)

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        code = {
            429: "rate_limited", 503: "service_unavailable", 400: "validation_error", 409: "conflict_error"
        }.get(status, "internal_server_error")  # fmt: skip
        return self._error(status, code, code.replace("_", " "), _retry_headers(retry_after))

    def unauthorized(self, expired: bool) -> web.Response:
        return self._error(401, "unauthorized", "API token is invalid.")

    def has_effect(self, request: web.Request) -> bool:
        return not {"database_id", "data_source_id"} & set(request.match_info)

    def handle(
        self, state: EmulatorState, tenant: str, request: web.Request, data: Any
    ) -> web.Response:
        version = request.headers.get("Notion-Version")
        if not version:
            return self._error(400, "missing_version", "Notion-Version header should be defined.")
        # Data sources exist from 2025-09-03 on, when database queries moved to them.
        sources = version >= DATA_SOURCES_VERSION
        for kind in ("database_id", "data_source_id"):
            if kind in request.match_info:
                if sources != (kind == "data_source_id"):
                    return self._error(400, "invalid_request_url", "Invalid request URL.")
                return notion_query(state.notion_pages, tenant, request.match_info[kind], data)
        parent = data.get("parent") if isinstance(data, dict) else None
        parent_id = None
        if isinstance(parent, dict):
            parent_id = parent.get("page_id") or parent.get("database_id")
            if sources and parent_id is None:
                parent_id = parent.get("data_source_id")
        if not isinstance(parent_id, str):
            return self._error(400, "validation_error", "body.parent should be defined.")
        if parent_id.replace("-", "").startswith("00000000"):
            return self._error(
                404, "object_not_found", f"Could not find page with ID: {parent_id}."
            )
        properties = data.get("properties", {})
        if not _notion_properties(properties):
            return self._error(
                400, "validation_error", "body.properties should be an object of property values."
            )
        children = data.get("children", [])
        if not isinstance(children, list) or len(children) > 100:
            return self._error(400, "validation_error", "body.children.length should be ≤ 100.")
        for block in children:
            rich = (
                block.get(block.get("type", ""), {}).get("rich_text", [])
                if isinstance(block, dict)
                else []
            )
            if any(utf16_length(item.get("text", {}).get("content", "")) > 2000 for item in rich):
                return self._error(400, "validation_error", "text.content.length should be ≤ 2000.")
        page_id = str(uuid.uuid4())
        page = {
            "object": "page",
            "id": page_id,
            "created_time": time.strftime("%Y-%m-%dT%H:%M:00.000Z", time.gmtime()),
            "parent": parent,
            "archived": False,
            "properties": properties,
            "url": f"https://www.notion.so/{page_id.replace('-', '')}",
        }
        rows = parent.get("database_id") or parent.get("data_source_id")
        if isinstance(rows, str):  # a row, found by its database's or data source's query
            state.notion_pages.add(tenant, rows, page)
        return json_response(200, page)


def _notion_properties(given: Any) -> bool:
    """Whether ``given`` is a page's ``properties`` as Notion accepts them: at most 100
    property values, each an object whose title or rich text (if any) is at most 100
    items of at most 2,000 characters."""
    if not isinstance(given, dict) or len(given) > 100:
        return False
    for value in given.values():
        if not isinstance(value, dict):
            return False
        for kind in ("title", "rich_text"):
            items = value.get(kind, [])
            if not isinstance(items, list) or len(items) > 100:
                return False
            for item in items:
                text = item.get("text") if isinstance(item, dict) else None
                content = text.get("content") if isinstance(text, dict) else None
                if not isinstance(content, str) or utf16_length(content) > 2_000:
                    return False
    return True


class Jira(Vendor):
    name = "jira"

    def token(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                pair = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return pair.partition(":")[2] or None
        return _bearer(request)

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        body = {"errorMessages": [f"emulated {status}"], "errors": {}}
        return json_response(status, body, _retry_headers(retry_after))

    def unauthorized(self, expired: bool) -> web.Response:
        body = {
            "errorMessages": [
                "You are not authenticated. Authentication required to perform this operation."
            ]
        }
        return json_response(401, {**body, "errors": {}})

    def has_effect(self, request: web.Request) -> bool:
        return not request.path.endswith("/search/jql")

    def handle(
        self, state: EmulatorState, tenant: str, request: web.Request, data: Any
    ) -> web.Response:
        if request.path.endswith("/search/jql"):
            return jira_search(state.jira_issues, tenant, request, data)
        fields = data.get("fields") if isinstance(data, dict) else None
        if not isinstance(fields, dict):
            return json_response(400, {"errorMessages": ["fields are required"], "errors": {}})
        errors: dict[str, str] = {}
        properties = _entity_properties(data.get("properties"))
        if properties is None:
            errors["properties"] = "Entity properties must be a list of {key, value} objects, each value at most 32 KB."
        project = (fields.get("project") or {}).get("key")
        if not isinstance(project, str) or project.startswith("MISSING"):
            errors["project"] = "valid project is required"
        if not fields.get("summary"):
            errors["summary"] = "You must specify a summary of the issue."
        if not (fields.get("issuetype") or {}).get("name"):
            errors["issuetype"] = "valid issue type is required"
        description = fields.get("description")
        if description is not None and not (
            isinstance(description, dict)
            and description.get("type") == "doc"
            and description.get("version") == 1
        ):
            errors["description"] = (
                "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
            )
        if errors:
            return json_response(400, {"errorMessages": [], "errors": errors})
        number = state.next_number("jira", tenant, str(project))
        ident = str(10_000 + next(state.sequence))
        base = f"{request.scheme}://{request.host}"
        issue = {"id": ident, "key": f"{project}-{number}", "self": f"{base}/rest/api/3/issue/{ident}"}
        state.jira_issues.add(tenant, str(project), issue, properties or {})
        return json_response(201, issue)


def _entity_properties(given: Any) -> dict[str, Any] | None:
    """The ``properties`` of a create request as key → value, or None when malformed."""
    if given is None:
        return {}
    if not isinstance(given, list):
        return None
    properties: dict[str, Any] = {}
    for entry in given:
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str) or not 1 <= len(key) <= 255 or "value" not in entry:
            return None
        if len(orjson.dumps(entry["value"])) > 32_768:  # Jira's limit on a property's value
            return None
        properties[key] = entry["value"]
    return properties


class GitHub(Vendor):
    name = "github"
    _DOCS = "https://docs.github.com/rest"

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        message = "You have exceeded a secondary rate limit." if status == 429 else "Server Error"
        body = {"message": message, "documentation_url": self._DOCS, "status": str(status)}
        return json_response(status, body, _retry_headers(retry_after))

    def unauthorized(self, expired: bool) -> web.Response:
        return json_response(
            401, {"message": "Bad credentials", "documentation_url": self._DOCS, "status": "401"}
        )

    def handle(
        self, state: EmulatorState, tenant: str, request: web.Request, data: Any
    ) -> web.Response:
        if not request.headers.get("User-Agent"):
            return json_response(
                403,
                {
                    "message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"
                },
            )
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        if owner.startswith("missing") or repo.startswith("missing"):
            return json_response(
                404, {"message": "Not Found", "documentation_url": self._DOCS, "status": "404"}
            )
        if request.method == "GET":
            return self._list(state, tenant, request, owner, repo)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("title"), str | int)
            or data.get("title") == ""
        ):
            errors = [{"resource": "Issue", "code": "missing_field", "field": "title"}]
            body = {
                "message": "Validation Failed",
                "errors": errors,
                "documentation_url": self._DOCS,
                "status": "422",
            }
            return json_response(422, body)
        if isinstance(data.get("body"), str) and len(data["body"]) > 65_536:
            # What GitHub answers (it does not cut the body).
            errors = [{"resource": "Issue", "code": "custom", "field": "body",
                       "message": "body is too long (maximum is 65536 characters)"}]  # fmt: skip
            body = {"message": "Validation Failed", "errors": errors, "documentation_url": self._DOCS, "status": "422"}
            return json_response(422, body)
        number = state.next_number("github", tenant, owner.lower(), repo.lower())
        ident = 2_000_000_000 + next(state.sequence)
        base = f"{request.scheme}://{request.host}"
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        issue = {
            "id": ident,
            "node_id": "I_kwEMU"
            + base64.urlsafe_b64encode(ident.to_bytes(8, "big")).decode().rstrip("="),
            "number": number,
            "title": data["title"],
            "body": data["body"] if isinstance(data.get("body"), str) else None,
            "state": "open",
            # GitHub drops, silently, the labels of a caller without push access (a
            # repository named "no-push-*" here).
            "labels": [] if repo.lower().startswith("no-push-")
            else [{"name": str(name)} for name in data.get("labels", [])][:100],
            "url": f"{base}/repos/{owner}/{repo}/issues/{number}",
            "html_url": f"{base}/{owner}/{repo}/issues/{number}",
            "created_at": now,
            "updated_at": now,
        }
        state.github_issues.add(tenant, owner, repo, issue)
        return json_response(201, issue)

    def _list(
        self, state: EmulatorState, tenant: str, request: web.Request, owner: str, repo: str
    ) -> web.Response:
        query = request.query
        try:
            since = datetime.fromisoformat(query["since"]) if query.get("since") else None
            if since is not None and since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            page = max(1, int(query.get("page", "1")))
            per_page = max(1, min(100, int(query.get("per_page", "30"))))
        except ValueError:
            return json_response(
                422, {"message": "Validation Failed", "documentation_url": self._DOCS, "status": "422"}
            )
        issues, more = state.github_issues.listed(
            tenant, owner, repo, state=query.get("state", "open"), since=since,
            newest_first=query.get("direction", "desc") != "asc", page=page, per_page=per_page,
        )  # fmt: skip
        headers = None
        if more:
            following = request.url.update_query(page=str(page + 1))
            headers = {"Link": f'<{following}>; rel="next"'}
        return json_response(200, issues, headers)

    def has_effect(self, request: web.Request) -> bool:
        return request.method == "POST"


class Hooks(Vendor):
    """A generic webhook receiver that honours ``Idempotency-Key`` (when dedup is on).

    Query parameters steer it: ``status=NNN`` answers that status (with
    ``retry_after=S``), ``text=1`` answers text/plain, ``size=N`` pads the reply to N bytes.
    """

    name = "http"
    requires_auth = False

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        return json_response(status, {"error": f"emulated {status}"}, _retry_headers(retry_after))

    def handle(
        self, state: EmulatorState, tenant: str, request: web.Request, data: Any
    ) -> web.Response:
        query = request.query
        status = int(query["status"]) if query.get("status", "").isdigit() else 200
        if not 200 <= status <= 599:
            status = 400
        retry_after = (
            float(query["retry_after"]) if query.get("retry_after", "").isdigit() else None
        )
        if status >= 300:
            return self.error(status, retry_after)
        size = min(int(query["size"]), 4_000_000) if query.get("size", "").isdigit() else 0
        if query.get("text"):
            return web.Response(status=status, text="ok " + "x" * size, content_type="text/plain")
        body = {
            "received": True,
            "id": next(state.sequence),
            "method": request.method,
            "json": data,
        }
        if size:
            body["padding"] = "x" * size
        return json_response(status, body)


VENDORS: dict[str, Vendor] = {
    vendor.name: vendor for vendor in (Slack(), Gmail(), Notion(), Jira(), GitHub(), Hooks())
}
