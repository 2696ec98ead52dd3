"""Who is calling: bearer key, workspace choice, and refusal of tenant claims.

Choosing the workspace (the README copies this): a request names its workspace either
in the URL path — ``/mcp/{space_id}`` or ``/v1/spaces/{space_id}/...`` — or in the
``X-Switchyard-Space`` header on ``/mcp`` and ``/v1/...``; a key that owns exactly one
workspace may name none. Naming two different workspaces at once is a 400; naming one
the key does not own is a 403. The path form suits MCP clients that only take a URL and
a bearer token, e.g. Cursor's ``~/.cursor/mcp.json``::

    {"mcpServers": {"switchyard": {
        "url": "https://switchyard.example.com/mcp/sales",
        "headers": {"Authorization": "Bearer sy_0123456789abcdef_..."}}}}

or Claude Code: ``claude mcp add --transport http switchyard
https://switchyard.example.com/mcp --header "Authorization: Bearer sy_..."
--header "X-Switchyard-Space: sales"``.

The tenant is never chosen by the request: it is the API key's. A request that *claims*
a tenant (header ``X-Switchyard-Tenant``, a ``tenant_id``/``tenantId``/``tenant`` field
in the body, its ``_meta``, the tool ``arguments`` or their ``_meta``) other than the
key's is refused with 403 before anything is published.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Mapping
from typing import Any

from core.settings import Settings
from schemas import ActionConfig

from .contracts import Authenticator, Identity
from .errors import BadRequest, Forbidden

__all__ = [
    "SINGLE_HEADERS",
    "SPACE_HEADER",
    "TENANT_HEADERS",
    "authenticate",
    "bearer_token",
    "check_argument_claims",
    "check_claims",
    "reads_everything",
    "refuse_repeated_headers",
    "requested_space",
]

SPACE_HEADER = "X-Switchyard-Space"
TENANT_HEADERS = ("X-Switchyard-Tenant", "X-Tenant-Id")
_TENANT_KEYS = ("tenant_id", "tenantId", "tenant")
_SPACE_KEYS = ("space_id", "spaceId")
# Where a body may carry a claim: the top level, and these nested objects (REST and MCP shapes).
_NESTED = ("_meta", "meta", "params", "arguments")


def reads_everything(settings: Settings, headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` carry the admin token or the read-only observer token
    (compared in constant time): what may read every tenant's views and metrics.

    Raises:
        BadRequest: the Authorization header (or another single one) appears twice.
    """
    refuse_repeated_headers(headers)
    presented = bearer_token(headers)
    if presented is None:
        return False
    return any(
        hmac.compare_digest(presented.encode(), token.get_secret_value().encode())
        for token in (settings.admin_token, settings.observer_token)
        if token is not None
    )


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    # Keys and tokens are printable ASCII; anything else (raw bytes arrive as surrogates)
    # is no credential, and must not reach an encode() that would fail.
    if scheme.lower() != "bearer" or not token or not token.isascii() or not token.isprintable():
        return None
    return token


# Headers that each name one credential, tenant, workspace or key: sent twice, which copy
# counts would be a guess (a proxy may add one), so a request with two is refused.
SINGLE_HEADERS = ("Authorization", SPACE_HEADER, *TENANT_HEADERS, "Idempotency-Key")


def refuse_repeated_headers(headers: Mapping[str, str]) -> None:
    """Refuse a request that repeats one of :data:`SINGLE_HEADERS`.

    Raises:
        BadRequest: naming the repeated header.
    """
    getall = getattr(headers, "getall", None)  # a plain mapping holds one of each
    if getall is None:
        return
    for name in SINGLE_HEADERS:
        if len(getall(name, ())) > 1:
            raise BadRequest(f"the {name} header appears more than once")


def requested_space(path_space: str | None, headers: Mapping[str, str]) -> str | None:
    """The workspace named by the URL path or the ``X-Switchyard-Space`` header.

    Raises:
        BadRequest: path and header name different workspaces.
    """
    header_space = (headers.get(SPACE_HEADER) or "").strip() or None
    if path_space and header_space and path_space != header_space:
        raise BadRequest("the URL path and the X-Switchyard-Space header name different workspaces")
    return path_space or header_space


async def authenticate(
    auth: Authenticator, headers: Mapping[str, str], path_space: str | None = None
) -> Identity:
    """Authenticate a request and refuse a header that claims another tenant.

    Uses ``auth.authenticate_async`` when the authenticator has it (scrypt off the loop).

    Raises:
        ingress.errors.Unauthorized: missing or invalid key.
        Forbidden: the key does not own the workspace, or a header claims another tenant.
        BadRequest: the workspace is ambiguous, or a header naming it (or the key,
            tenant or idempotency key) appears twice.
    """
    refuse_repeated_headers(headers)
    bearer = bearer_token(headers)
    space = requested_space(path_space, headers)
    checker = getattr(auth, "authenticate_async", None)
    if checker is not None and inspect.iscoroutinefunction(checker):
        identity: Identity = await checker(bearer, space)
    else:
        identity = auth.authenticate(bearer, space)
    check_claims(identity, headers=headers)
    return identity


def _claims(body: Any, keys: tuple[str, ...], depth: int = 0) -> list[Any]:
    if not isinstance(body, dict) or depth > 3:
        return []
    found = [body[key] for key in keys if key in body]
    for nested in _NESTED:
        found.extend(_claims(body.get(nested), keys, depth + 1))
    return found


def check_argument_claims(identity: Identity, arguments: Any, action: ActionConfig | None) -> None:
    """Refuse a claim of another tenant in an action's ``arguments`` (as ``check_claims``
    does in a body's), but for the fields its input schema declares: those are the
    target app's data (a Jira site's "tenant"). An unknown action declares nothing.

    Raises:
        Forbidden: an argument the action does not declare names another tenant.
    """
    if isinstance(arguments, dict) and action is not None:
        arguments = action.undeclared(arguments)
    # Nested as in a body: only tenant keys are claims there (an app's "space_id" is not).
    check_claims(identity, body={"arguments": arguments})


def check_claims(
    identity: Identity, *, headers: Mapping[str, str] | None = None, body: Any = None
) -> None:
    """Refuse any claim of a tenant (or, outside tool arguments, a workspace) not the key's.

    A claim equal to the authenticated identity is allowed (and ignored).

    Raises:
        Forbidden: a header or body field names another tenant or workspace.
    """
    for name in TENANT_HEADERS:
        value = (headers or {}).get(name)
        if value is not None and value.strip() != identity.tenant_id:
            raise Forbidden("the request claims a tenant other than its API key's")
    if any(claim != identity.tenant_id for claim in _claims(body, _TENANT_KEYS)):
        raise Forbidden("the request claims a tenant other than its API key's")
    if isinstance(body, dict):
        # Tool arguments may legitimately hold a "space_id" of the target app; only the
        # envelope and its _meta speak for the Switchyard workspace.
        spaces = [body[key] for key in _SPACE_KEYS if key in body]
        for meta in ("_meta", "meta"):
            spaces.extend(_claims(body.get(meta), _SPACE_KEYS, 3))
        if any(space != identity.space_id for space in spaces):
            raise Forbidden("the request claims a workspace other than the one authenticated")
