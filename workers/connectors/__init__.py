"""The connectors the workers run, by name (the connector topic suffix).

Which connectors keep side effects single on redelivery: ``http`` when the receiver
honours ``Idempotency-Key`` (``upstream_idempotency``); ``slack``, ``gmail``,
``github``, ``jira`` and ``notion``, which find what an earlier attempt did before acting
again (``finds_done``; our key rides in the message's metadata, a mail header, the issue
body, an issue entity property, or the text property a Notion database names in
``key_property``). A Notion page under a page, or in a database without
``key_property``, has no place for our key, so a retry after an ambiguous failure
(timeout after the request was sent, worker killed after the call) can repeat the side
effect there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import PermanentError
from schemas import ErrorCode

from ._base import CallHeld, Connector, ConnectorCall, CredentialsExpired, Operation, classify_http
from .github import GitHubConnector
from .gmail import GmailConnector
from .http import HttpConnector
from .jira import JiraConnector
from .notion import NotionConnector
from .slack import SlackConnector

__all__ = [
    "CONNECTORS",
    "CallHeld",
    "Connector",
    "ConnectorCall",
    "CredentialsExpired",
    "Operation",
    "classify_http",
    "credentials_problem",
    "get_connector",
]

CONNECTORS: dict[str, type[Connector]] = {
    kind.name: kind
    for kind in (
        SlackConnector,
        GmailConnector,
        NotionConnector,
        JiraConnector,
        GitHubConnector,
        HttpConnector,
    )
}


def get_connector(name: str) -> type[Connector]:
    """The connector class for ``name``.

    Raises:
        PermanentError: CONNECTOR_DISABLED when no connector has that name.
    """
    try:
        return CONNECTORS[name]
    except KeyError:
        raise PermanentError(
            ErrorCode.CONNECTOR_DISABLED, f"no connector named {name[:32]!r}"
        ) from None


def credentials_problem(
    connector: str, credentials: Mapping[str, Any], *, base_url_set: bool = False
) -> str | None:
    """Why ``connector`` could never call with ``credentials`` (names fields, never values);
    None when they hold one of its credential shapes. ``base_url_set``: the deployment
    sends every connector to one base URL, so fields that only locate the API are needless."""
    kind = CONNECTORS[connector]
    shapes = kind.credential_shapes
    if base_url_set:
        shapes = tuple(shape - kind.credential_locators for shape in shapes)
    if not shapes or any(all(_filled(credentials.get(f)) for f in shape) for shape in shapes):
        return None
    wanted = " or ".join("{" + ", ".join(sorted(shape)) + "}" for shape in shapes)
    return f"{connector} credentials need {wanted}, each a non-empty string"


def _filled(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
