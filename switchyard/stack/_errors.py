"""The local stack's one error type."""

from __future__ import annotations

from core.errors import SwitchyardError

__all__ = ["StackError"]


class StackError(SwitchyardError, RuntimeError):
    """The local stack cannot start or stop; the message is one line saying why.

    The CLI prints the message as is and exits 1, so it names what is missing
    ("Java 17+ not found on PATH", "port 9092 on 127.0.0.1 is taken") rather than a trace.
    """
