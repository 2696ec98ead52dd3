"""The running parts of one ingress app, reachable from handlers as ``app[STATE]``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from core.settings import Settings
from core.vault import VaultAdmin

from .accepted import AcceptedFeed
from .directory import Directory
from .pipeline import KafkaPipeline
from .results import ResultsFeed

__all__ = ["STATE", "IngressState"]


@dataclass(slots=True)
class IngressState:
    settings: Settings
    directory: Directory
    results: ResultsFeed
    pipeline: KafkaPipeline
    accepted: AcceptedFeed | None = field(default=None)
    vault: VaultAdmin | None = field(default=None)
    # Admin writes of workspaces on this replica, one at a time: a write's precondition
    # check, publish and read-back are not interleaved with another's.
    config_writes: asyncio.Lock = field(default_factory=asyncio.Lock)


STATE = web.AppKey("switchyard_ingress", IngressState)
