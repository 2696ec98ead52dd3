"""Generic HTTP/webhook connector, limited to the workspace's host allow-list.

Allow-list entries (``ConnectorOptions.allowed_hosts``): ``api.example.com`` (that host
on the scheme's default port), ``*.hooks.example`` (any subdomain, not the apex),
``127.0.0.1:8900`` (that host and port). A URL outside the list fails with
HOST_NOT_ALLOWED before any request. Redirects are not followed, so a 3xx cannot lead
outside the list; it fails the command (``upstream_rejected``, naming the status).

Side effects: ``Idempotency-Key`` (IETF draft-ietf-httpapi-idempotency-key-header) is
sent; single side effects hold exactly when the receiver honours it. Under that draft a
receiver answers 409 to a retry whose first request is still being processed, so a 409
is retried (after its ``Retry-After`` when sent), not taken as final.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, ClassVar

import orjson
from yarl import URL

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode

from ._args import validated
from ._base import Connector, ConnectorCall, Operation, output_schema, parse_retry_after
from ._http import raise_for_status, send

__all__ = ["HttpConnector", "host_allowed"]

# The output travels in a Result on Kafka: keep the upstream body small.
MAX_OUTPUT_BYTES = 64 * 1024
_MAX_DEPTH = 14
# Headers the connector owns: credentials, transport framing and our own metadata.
_RESERVED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "idempotency-key",
        "traceparent",
        "tracestate",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "minLength": 8, "maxLength": 2048, "pattern": r"^https?://"},
        "method": {"enum": ["POST", "PUT", "PATCH", "GET", "DELETE"], "default": "POST"},
        "headers": {
            "type": "object",
            "maxProperties": 32,
            "propertyNames": {"pattern": r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"},
            "additionalProperties": {
                # What aiohttp refuses to send (it raises); a tab is fine.
                "type": "string", "maxLength": 4096, "pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]*$",
            },
        },
        "json": {"description": "JSON body (any JSON value)."},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def host_allowed(url: URL, allowed_hosts: Iterable[str]) -> bool:
    """Whether ``url``'s host (and port) matches one allow-list entry."""
    host = (url.host or "").lower().rstrip(".")
    scheme = (url.scheme or "").lower()
    if not host or scheme not in _DEFAULT_PORTS:
        return False
    port = url.explicit_port or _DEFAULT_PORTS[scheme]
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    for raw in allowed_hosts:
        entry, entry_port = _parse_entry(raw, _DEFAULT_PORTS[scheme])
        if port != entry_port or not entry:
            continue
        if entry.startswith("*."):
            # Wildcards name DNS subdomains; "*.0.0.1" must not match the IP 127.0.0.1.
            if not is_ip and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def _parse_entry(raw: str, default_port: int) -> tuple[str, int]:
    entry = raw.strip().lower()
    if entry.startswith("["):  # "[v6]" or "[v6]:port"
        address, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return address, int(port) if port.isdigit() else default_port
    if entry.count(":") == 1:  # "host:port"; a bare IPv6 address has several colons
        host, _, port = entry.partition(":")
        return host.rstrip("."), int(port) if port.isdigit() else -1
    return entry.rstrip("."), default_port


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > _MAX_DEPTH:
                return deepest
            stack.extend(
                (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest

REPLY_SCHEMA = output_schema(
    {
        "status": {"type": "integer", "description": "The reply's HTTP status (2xx or 3xx)."},
        "json": {"description": "The reply's body, when it was JSON (null for an empty one)."},
        "text": {"type": "string", "description": "The reply's body otherwise, as text."},
        "truncated": {"type": "boolean", "description": "Whether text was cut at the size limit."},
    },
    "status",
)


class HttpConnector(Connector):
    name: ClassVar[str] = "http"
    upstream_idempotency: ClassVar[bool] = True
    public_addresses_only: ClassVar[bool] = True
    operations: ClassVar[dict[str, Operation]] = {
        "request": Operation(
            description="Call an allow-listed HTTP endpoint (webhook) with a JSON body.",
            input_schema=REQUEST_SCHEMA,
            output_schema=REPLY_SCHEMA,
        )
    }

    @staticmethod
    def _auth_headers(call: ConnectorCall) -> dict[str, str]:
        creds = call.credentials
        name, value = creds.get("header_name"), creds.get("header_value")
        if isinstance(name, str) and name and isinstance(value, str):
            return {name: value}
        for field in ("bearer_token", "token"):
            token = creds.get(field)
            if isinstance(token, str) and token:
                return {"Authorization": f"Bearer {token}"}
        return {}

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Send the request; returns ``{status, json}`` or ``{status, text, truncated}``.

        Raises:
            PermanentError: HOST_NOT_ALLOWED (no request made), INVALID_ARGUMENTS for a
                reserved header, other 4xx from the receiver.
            CredentialsExpired: 401.
            RetryableError: 408, 429, 5xx, timeouts, connection errors.
        """
        args = validated(self, call)
        what = "http request"
        try:
            url = URL(args["url"])
        except ValueError as exc:
            raise PermanentError(ErrorCode.INVALID_ARGUMENTS, f"{what}: invalid URL") from exc
        if url.user is not None or url.password is not None:
            raise PermanentError(ErrorCode.INVALID_ARGUMENTS, f"{what}: URL must not hold userinfo")
        if not host_allowed(url, call.allowed_hosts):
            raise PermanentError(
                ErrorCode.HOST_NOT_ALLOWED,
                f"{what}: host {(url.host or '')[:253]!r} is not allowed",
            )
        auth = self._auth_headers(call)
        reserved = _RESERVED | {name.lower() for name in auth}
        headers = dict(args.get("headers") or {})
        clash = sorted(name for name in headers if name.lower() in reserved)
        if clash:
            raise PermanentError(
                ErrorCode.INVALID_ARGUMENTS, f"{what}: headers {', '.join(clash)} are reserved"
            )
        headers.setdefault("Accept", "application/json, text/plain;q=0.9, */*;q=0.1")
        what = f"http {url.host}"
        reply = await send(
            call,
            args.get("method", "POST"),
            url,
            what=what,
            headers={**headers, **auth},
            json_body=args.get("json"),
            limit=MAX_OUTPUT_BYTES,
        )
        if reply.status == 409:
            raise RetryableError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"{what}: 409 conflict (the same idempotency key still in progress), retried",
                retry_after=parse_retry_after(reply.headers.get("Retry-After")),
                http_status=409,
            )
        raise_for_status(reply, what)
        output: dict[str, Any] = {"status": reply.status}
        if "json" in reply.headers.get("Content-Type", "") and not reply.truncated:
            try:
                parsed = orjson.loads(reply.body) if reply.body else None
            except orjson.JSONDecodeError:
                parsed = ...
            if parsed is not ... and _depth(parsed) <= _MAX_DEPTH:
                output["json"] = parsed
                return output
        output["text"] = reply.body.decode("utf-8", "replace")
        output["truncated"] = reply.truncated
        return output
