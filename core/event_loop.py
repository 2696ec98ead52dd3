"""The event loop every Switchyard process runs on.

uvloop (libuv under asyncio's API) by default: the processes are network-bound
(aiohttp, aiokafka) and it costs less CPU per socket event than asyncio's selector
loop — measured on the closed-loop MCP bench, 6-8% less CPU per call across the
pipeline. ``SWITCHYARD_EVENT_LOOP=asyncio`` keeps the standard loop (for debugging, or a
platform without uvloop).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

__all__ = ["EventLoop", "use_event_loop"]

logger = logging.getLogger(__name__)

EventLoop = Literal["uvloop", "asyncio"]


def use_event_loop(choice: EventLoop) -> EventLoop:
    """Make loops created from now on (``asyncio.run``, ``new_event_loop``) ``choice``'s.

    Returns the loop actually used: ``asyncio`` when uvloop is not installed.
    """
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            logger.warning("uvloop is not installed; running on asyncio's event loop")
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    asyncio.set_event_loop_policy(None)
    return "asyncio"
