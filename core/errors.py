"""The error tree of every Switchyard process.

    SwitchyardError
    ├── ConfigurationError (ValueError)      bad settings or configuration records
    ├── KafkaUnavailable (ConnectionError)   broker unreachable or a send not acknowledged
    ├── VaultError
    │   ├── VaultUnavailable (ConnectionError)
    │   ├── VaultForbidden (PermissionError)  a token asked for what its policy does not grant
    │   ├── CredentialsMissing (LookupError)  no secret stored for (tenant, connector)
    │   └── CasConflict                       a check-and-set write lost the race
    └── CommandError                          carries schemas.ErrorInfo: the retry decision
        ├── RetryableError                    try again (optionally after ``retry_after``)
        └── PermanentError                    retrying cannot help

Foreign errors (aiokafka, hvac, aiohttp) are translated at the boundary with
``raise Ours(...) from exc``. Messages never contain secrets.
"""

from __future__ import annotations

from schemas import ErrorCode, ErrorInfo

__all__ = [
    "CasConflict",
    "CommandError",
    "ConfigurationError",
    "CredentialsMissing",
    "KafkaUnavailable",
    "PermanentError",
    "RetryableError",
    "SwitchyardError",
    "VaultError",
    "VaultForbidden",
    "VaultUnavailable",
]


class SwitchyardError(Exception):
    """Root of every error Switchyard raises on purpose."""


class ConfigurationError(SwitchyardError, ValueError):
    pass


class KafkaUnavailable(SwitchyardError, ConnectionError):
    pass


class VaultError(SwitchyardError):
    pass


class VaultUnavailable(VaultError, ConnectionError):
    pass


class VaultForbidden(VaultError, PermissionError):
    pass


class CredentialsMissing(VaultError, LookupError):
    pass


class CasConflict(VaultError):
    pass


class CommandError(SwitchyardError):
    """A command-level failure whose data crosses Kafka as :class:`schemas.ErrorInfo`."""

    retryable: bool = False

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.http_status = http_status

    def to_info(self) -> ErrorInfo:
        """The wire form; values ErrorInfo would refuse (an HTTP status outside 100-599,
        which a broken upstream can send, a negative wait) are dropped, not raised."""
        status = self.http_status if self.http_status is not None and 100 <= self.http_status <= 599 else None
        wait = None if self.retry_after is None else max(0.0, self.retry_after)
        return ErrorInfo(
            code=self.code,
            message=self.message[:2000],
            retryable=self.retryable,
            retry_after=wait,
            http_status=status,
        )

    @classmethod
    def from_info(cls, info: ErrorInfo) -> CommandError:
        kind = RetryableError if info.retryable else PermanentError
        return kind(info.code, info.message, retry_after=info.retry_after, http_status=info.http_status)


class RetryableError(CommandError):
    retryable = True


class PermanentError(CommandError):
    retryable = False
