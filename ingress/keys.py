"""API keys: ``sy_<key_id>_<secret>``, stored only as a salted scrypt hash.

``key_id`` (16 hex characters) finds the :class:`schemas.ApiKeyRecord` on the config
topic; the secret (43 URL-safe characters, 256 bits) is checked against
``secret_hash = scrypt(secret, salt, n=2**14, r=8, p=1)``. scrypt is slow on purpose
(tens of milliseconds, 16 MiB), so verifiers cache successful checks briefly
(:class:`ingress.directory.Directory`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas import ApiKeyRecord

__all__ = ["ParsedKey", "generate_api_key", "hash_secret", "key_record", "parse_api_key", "verify_secret"]

_N, _R, _P = 2**14, 8, 1
# The secret is token_urlsafe, which may contain '_': split at most twice.
_KEY_RE = re.compile(r"^sy_([A-Za-z0-9]{8,32})_([A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"ParsedKey(key_id={self.key_id!r}, secret=***)"


def parse_api_key(token: str) -> ParsedKey | None:
    """Split a presented key into id and secret; None when it is not shaped like a key."""
    match = _KEY_RE.match(token)
    if match is None:
        return None
    return ParsedKey(key_id=match.group(1), secret=match.group(2))


def hash_secret(secret: str, salt_hex: str) -> str:
    """The hex scrypt hash of ``secret`` under ``salt_hex`` (what a record stores)."""
    digest = hashlib.scrypt(
        secret.encode(), salt=bytes.fromhex(salt_hex), n=_N, r=_R, p=_P, dklen=32, maxmem=64 << 20
    )
    return digest.hex()


def verify_secret(secret: str, record: ApiKeyRecord) -> bool:
    """Whether ``secret`` matches ``record`` (constant-time comparison of the hashes)."""
    return hmac.compare_digest(hash_secret(secret, record.salt), record.secret_hash)


def generate_api_key(
    *, tenant_id: str, spaces: list[str], user_id: str, role: str
) -> tuple[str, ApiKeyRecord]:
    """A new key: ``(plaintext, record)``. Show the plaintext once; store only the record.

    Raises:
        pydantic.ValidationError: when an id is not in the safe character set.
    """
    plaintext = f"sy_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    return plaintext, key_record(plaintext, tenant_id=tenant_id, spaces=spaces, user_id=user_id, role=role)


def key_record(plaintext: str, *, tenant_id: str, spaces: list[str], user_id: str, role: str) -> ApiKeyRecord:
    """The record of an existing key ``plaintext`` (a fresh salt; only the hash is kept).

    Raises:
        ValueError: ``plaintext`` is not shaped like a key.
        pydantic.ValidationError: when an id is not in the safe character set.
    """
    parsed = parse_api_key(plaintext)
    if parsed is None:
        raise ValueError("not an API key")
    salt = secrets.token_hex(16)
    return ApiKeyRecord(
        key_id=parsed.key_id,
        tenant_id=tenant_id,
        spaces=list(spaces),
        user_id=user_id,
        role=role,
        salt=salt,
        secret_hash=hash_secret(parsed.secret, salt),
        created_at=datetime.now(UTC),
    )
