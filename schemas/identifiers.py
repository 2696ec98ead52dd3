"""Identifier types shared by every model.

Tenant, workspace and connector ids end up inside Vault policy names and globs
(``t-<tenant>-<connector>``) and Kafka topic names, so they are restricted to
letters, digits and ``_``: no id can be crafted to look like another's policy.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

__all__ = [
    "ActionName",
    "CommandId",
    "ConnectorName",
    "IdempotencyKey",
    "OperationName",
    "RoleName",
    "SpaceId",
    "TenantId",
    "UserId",
    "SAFE_ID_PATTERN",
]

SAFE_ID_PATTERN = r"^[A-Za-z0-9_]{1,64}$"

TenantId = Annotated[str, StringConstraints(pattern=SAFE_ID_PATTERN)]
SpaceId = Annotated[str, StringConstraints(pattern=SAFE_ID_PATTERN)]
ConnectorName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
RoleName = Annotated[str, StringConstraints(pattern=SAFE_ID_PATTERN)]
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@+-]{1,128}$")]
# MCP tool names allow letters, digits, '_', '-' and '.'; actions are exposed as tools.
ActionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
OperationName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.]{1,64}$")]
CommandId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
