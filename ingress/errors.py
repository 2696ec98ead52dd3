"""Errors the ingress answers with, and how each maps to an HTTP status.

    core.errors.SwitchyardError
    └── IngressError                       an HTTP answer, rendered as {"error": {"code", "message"}}
        ├── BadRequest (ValueError)          400 malformed JSON, invalid fields, JSON too deep
        ├── Unauthorized (PermissionError)   401 missing/invalid/revoked key (+ WWW-Authenticate)
        ├── Forbidden (PermissionError)      403 wrong workspace, a claim of another tenant
        ├── NotFound (LookupError)           404 unknown, or another tenant's, command
        ├── Conflict                         409 an idempotency key reused for another request
        ├── PayloadTooLarge (ValueError)     413 body over the size cap
        ├── RateLimited                      429 the tenant's edge rate limit (+ Retry-After)
        └── ServiceUnavailable (ConnectionError)  503 Kafka or Vault unreachable (+ Retry-After)

Messages are for people and never carry a secret, a token or a stack trace.
"""

from __future__ import annotations

import math

from pydantic import ValidationError

from core.errors import SwitchyardError

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "IngressError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "from_validation",
]


class IngressError(SwitchyardError):
    """An error with an HTTP status and a stable machine-readable ``code``."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # Extra fields of the error object (never secrets), e.g. the key to retry with.
        self.details: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        """Extra response headers this error requires (e.g. ``Retry-After``)."""
        return {}


class BadRequest(IngressError, ValueError):
    status = 400
    code = "bad_request"


class UnsupportedMediaType(IngressError, ValueError):
    status = 415
    code = "unsupported_media_type"


class Unauthorized(IngressError, PermissionError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="switchyard"'}


class Forbidden(IngressError, PermissionError):
    status = 403
    code = "forbidden"


class NotFound(IngressError, LookupError):
    status = 404
    code = "not_found"


class Conflict(IngressError):
    status = 409
    code = "conflict"


class PreconditionFailed(IngressError):
    status = 412
    code = "precondition_failed"


class PayloadTooLarge(IngressError, ValueError):
    status = 413
    code = "payload_too_large"


class _RetryAfter(IngressError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)

    def headers(self) -> dict[str, str]:
        # Retry-After takes whole seconds; round up so a client that obeys it succeeds.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class RateLimited(_RetryAfter):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(_RetryAfter, ConnectionError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after)


def from_validation(exc: ValidationError, *, prefix: str = "") -> BadRequest:
    """A 400 that names the invalid fields without echoing their values (they may be secret)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        # A field name is the caller's text too: long ones are cut (a 64 KiB key would
        # otherwise make the message longer than an error detail may be).
        loc = [_short(str(part)) for part in error.get("loc", ())]
        where = ".".join([prefix, *loc] if prefix else loc) or "body"
        # Our own validators' messages without pydantic's "Value error, " in front.
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"... and {more} more")
    return BadRequest("; ".join(parts) or "invalid request")


def _short(name: str, limit: int = 64) -> str:
    return name if len(name) <= limit else f"{name[:limit]}..."
