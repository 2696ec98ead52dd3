"""What a block of code leaves in reference cycles, for tests that it leaves none.

The processes collect young objects only every 50,000 allocations (``core.heap``), so a
cycle through an exception's traceback holds the frames of the whole call (the request,
the batch, the HTTP response) until a rarer full collection. An exception kept in a
local of a frame on its own traceback makes such a cycle.
"""

from __future__ import annotations

import gc
from types import FrameType, TracebackType
from typing import Any

__all__ = ["CyclicGarbage"]


class CyclicGarbage:
    """``with CyclicGarbage() as left: ...``, then ``left.exceptions`` and ``left.frames``
    (type and function names) of what the block left in reference cycles."""

    def __init__(self) -> None:
        self.exceptions: list[str] = []
        self.frames: list[str] = []

    def __enter__(self) -> CyclicGarbage:
        gc.collect()
        gc.disable()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        gc.set_debug(gc.DEBUG_SAVEALL)
        garbage: list[Any] = []
        try:
            gc.collect()
            garbage = list(gc.garbage)
            self.exceptions = [type(o).__name__ for o in garbage if isinstance(o, BaseException)]
            self.frames = [o.f_code.co_name for o in garbage if isinstance(o, FrameType)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            del garbage
            gc.enable()
