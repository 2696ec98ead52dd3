"""Structured JSON logs with the command context on every line.

The per-command context (tenant, workspace, command id, trace id) lives in a
contextvar set by :func:`bind`, so any log call inside a command's task carries it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

__all__ = ["JsonFormatter", "bind", "configure_logging", "current_context"]

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "switchyard_log_context", default=None
)


def current_context() -> dict[str, str]:
    return _context.get() or {}


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Add fields (tenant_id, space_id, command_id, trace_id, ...) to every log line inside."""
    merged = {**current_context(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **current_context(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            line.update(extra)
        if record.exc_info:
            line["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stderr for this process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance at INFO; keep it for warnings.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
