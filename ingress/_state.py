"""The running parts of one ingress app, reachable from handlers as ``app[STATE]``."""

from __future__ import annotations

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


STATE = web.AppKey("switchyard_ingress", IngressState)
