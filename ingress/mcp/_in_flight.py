"""The tools/calls this replica is answering, and how their clients give up on them.

A client that gives up on a call (a user pressed stop, its own timeout) says so on the
handshake revisions with ``notifications/cancelled`` naming the call's request id, inside
the call's session; on 2026-07-28 by closing the call's response stream ("the server
MUST treat a client disconnect as cancellation of that request"; on the handshake
revisions a disconnect is no cancellation). The call is a command in Kafka by then;
cancelling it publishes the command's cancellation (``Pipeline.cancel``), so it does not
run later if it has not started. Only the replica answering the call knows which command
the request id stands for (session ids are signed, not stored): a notification another
replica receives is accepted and does nothing. Entries live while their call waits, so
there are at most as many as waiting calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson

from ingress.contracts import Identity

__all__ = ["CALL_IN_SESSION", "CLIENT_GONE", "CallsInFlight", "request_key"]

# (session id, request id) of the request being answered, set by the HTTP layer on the
# handshake revisions; None on the stateless one (closing the stream is its cancellation).
CALL_IN_SESSION: ContextVar[tuple[str, str] | None] = ContextVar("mcp_call_in_session", default=None)
# On 2026-07-28, set by the HTTP layer: whether the request's client has disconnected
# (asked when the request's handler is cancelled, which a disconnect does).
CLIENT_GONE: ContextVar[Callable[[], bool] | None] = ContextVar("mcp_client_gone", default=None)


def request_key(request_id: Any) -> str:
    """A JSON-RPC id as a key: 1 and "1" are two ids."""
    return orjson.dumps(request_id).decode()


class CallsInFlight:
    """``(tenant, workspace, session id, request id) -> command id`` of waiting calls."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str, str, str], str] = {}

    def __len__(self) -> int:
        return len(self._calls)

    @contextmanager
    def waiting(self, identity: Identity, command_id: str) -> Iterator[None]:
        """Known while the block runs, for the request :data:`CALL_IN_SESSION` names."""
        where = CALL_IN_SESSION.get()
        if where is None:
            yield
            return
        key = (identity.tenant_id, identity.space_id, *where)
        self._calls[key] = command_id
        try:
            yield
        finally:
            if self._calls.get(key) == command_id:
                del self._calls[key]

    def command_of(self, identity: Identity, session_id: str, request_id: Any) -> str | None:
        """The command of the caller's call ``request_id`` in ``session_id``, if it waits here."""
        return self._calls.get((identity.tenant_id, identity.space_id, session_id, request_key(request_id)))
