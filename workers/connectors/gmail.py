"""Gmail: ``users.messages.send`` with an OAuth access token.

The message is an RFC 822 (RFC 5322) document built with :class:`email.message.EmailMessage`
and sent base64url-encoded in ``raw``. An expired ``expires_at`` or a 401 raises
:class:`CredentialsExpired`; the runtime refreshes with :func:`workers.connectors.oauth.refresh`
and retries once.

Side effects: Gmail takes no idempotency key. Each message carries ours in a header
(:data:`._gmail_lookup.HEADER`), and before sending again after an attempt whose outcome
is unknown the runtime asks :meth:`GmailConnector.find_done`, which reads the mailbox's
sent messages back to the command's submission for it (:mod:`._gmail_lookup`).
``Idempotency-Key`` is sent too (Gmail ignores it), for the emulator's counts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, ClassVar

from core.errors import PermanentError
from schemas import ErrorCode

from ._args import credential, validated
from ._base import Connector, ConnectorCall, CredentialsExpired, Doubt, Operation
from ._gmail_lookup import HEADER, SENT_SCHEMA, GmailLookup, gmail_error, message_output
from ._http import send
from .oauth import expired

__all__ = [
    "ADDRESS_PATTERN",
    "GmailConnector",
    "build_message",
    "decode_raw",
    "encode_raw",
    "normalize_subject",
]

# addr-spec with a dot-atom local part (RFC 5322 §3.4.1); quoted local parts and
# display names are not accepted, which keeps header parsing unambiguous.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
ADDRESS_PATTERN = rf"^{_ATOM}(\.{_ATOM})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
_ADDRESS = {"type": "string", "pattern": ADDRESS_PATTERN, "maxLength": 320}
_ADDRESSES = {
    "oneOf": [_ADDRESS, {"type": "array", "items": _ADDRESS, "minItems": 1, "maxItems": 100}]
}
SEND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "to": {**_ADDRESSES, "description": "Recipient address or addresses."},
        "cc": {**_ADDRESSES, "description": "Copy recipients."},
        "subject": {"type": "string", "maxLength": 998, "pattern": r"^[^\r\n]*$"},
        "body": {"type": "string", "maxLength": 1_000_000, "description": "Plain-text body."},
    },
    "required": ["to", "subject", "body"],
    "additionalProperties": False,
}


def _addresses(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def normalize_subject(subject: str) -> str:
    """The subject as it survives RFC 5322 folding: whitespace runs become one space."""
    return " ".join(subject.split())


def build_message(
    *, to: str | Sequence[str], subject: str, body: str, cc: str | Sequence[str] | None = None
) -> EmailMessage:
    """An RFC 822 message; Gmail fills ``From``, ``Date`` and ``Message-ID`` itself.

    Raises:
        ValueError: when a header value cannot be encoded (e.g. a line break).
    """
    message = EmailMessage(policy=policy.SMTP)
    message["To"] = ", ".join(_addresses(to))
    if cc:
        message["Cc"] = ", ".join(_addresses(cc))
    # Header folding does not keep leading, trailing or repeated whitespace; normalise
    # it up front so what we send is what the recipient reads.
    message["Subject"] = normalize_subject(subject)
    # Bodies are text: utf-8, CRLF line ends on the wire, a transfer encoding chosen
    # for 7-bit safe transport.
    message.set_content(body, charset="utf-8")
    return message


def encode_raw(message: EmailMessage) -> str:
    """The message as Gmail's ``raw``: base64url (RFC 4648 §5) of its bytes."""
    return base64.urlsafe_b64encode(message.as_bytes()).decode("ascii")


def decode_raw(raw: str) -> EmailMessage:
    """Parse a ``raw`` value back into a message (accepts missing padding).

    Raises:
        ValueError: when ``raw`` is not base64url.
    """
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("raw is not base64url") from exc
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


class GmailConnector(Connector):
    name: ClassVar[str] = "gmail"
    credential_shapes: ClassVar[tuple[frozenset[str], ...]] = (frozenset({"access_token"}),)
    oauth: ClassVar[bool] = True
    default_base_url: ClassVar[str] = "https://gmail.googleapis.com"
    default_token_url: ClassVar[str] = "https://oauth2.googleapis.com/token"
    operations: ClassVar[dict[str, Operation]] = {
        "users.messages.send": Operation(
            description="Send an email from the connected Gmail account.",
            input_schema=SEND_SCHEMA,
            output_schema=SENT_SCHEMA,
            destructive=False,  # it creates; nothing already there changes
        )
    }

    finds_done: ClassVar[bool] = True

    def __init__(self) -> None:
        self.lookup = GmailLookup()

    @property
    def reads(self) -> int:
        """Mailbox read requests made by :meth:`find_done` (for tests and the curious)."""
        return self.lookup.reads

    def _token(self, call: ConnectorCall, what: str) -> str:
        token = credential(call, "access_token", connector=self.name)
        if expired(call.credentials, leeway=0):  # skip a doomed round trip: refreshed first
            raise CredentialsExpired(f"{what}: access token expired")
        return token

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        """The ``{id, threadId, labelIds}`` of a message an earlier attempt sent, or None."""
        validated(self, call)
        return await self.lookup.find(call, self._token(call, "gmail users.messages.list"), doubt)

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        """Send the message; returns ``{id, threadId, labelIds}``.

        Raises:
            CredentialsExpired: the access token is past ``expires_at`` or answered 401.
            RetryableError: 429, 403 with a rate-limit reason, 5xx, timeouts, connection errors.
            PermanentError: other 4xx, bad arguments, missing token.
        """
        args = validated(self, call)
        what = "gmail users.messages.send"
        token = self._token(call, what)
        try:
            message = build_message(
                to=args["to"], subject=args["subject"], body=args["body"], cc=args.get("cc")
            )
            message[HEADER] = call.idempotency_key
            raw = encode_raw(message)
        except (ValueError, TypeError) as exc:
            raise PermanentError(
                ErrorCode.INVALID_ARGUMENTS, f"{what}: message cannot be encoded"
            ) from exc
        reply = await send(
            call,
            "POST",
            f"{call.base_url.rstrip('/')}/gmail/v1/users/me/messages/send",
            what=what,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            json_body={"raw": raw},
        )
        gmail_error(reply, what)
        data = reply.json(what)
        if not isinstance(data, dict) or "id" not in data:
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: response has no id")
        return message_output(data)
