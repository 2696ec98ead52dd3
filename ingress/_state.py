"""The running parts of one ingress app, reachable from handlers as ``app[STATE]``."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from core.settings import Settings
from core.vault import VaultAdmin

from ._bounded import KeyedLocks
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
    # Admin writes of one workspace on this replica, one at a time: a write's
    # precondition check, publish and read-back are not interleaved with another's of
    # the same workspace (other workspaces' writes go on meanwhile).
    config_writes: KeyedLocks = field(default_factory=KeyedLocks)


STATE = web.AppKey("switchyard_ingress", IngressState)
