"""Garbage-collector settings for the long-running processes.

Each command allocates a few hundred short-lived objects that reference counting frees;
CPython's default (a young collection every 700 allocations) ran the cycle collector
every couple of commands and cost the ingress a sixth of its CPU (measured, README
"Benchmarks"). Cyclic garbage is still collected, in batches of ~50,000 allocations.
"""

from __future__ import annotations

import gc

__all__ = ["GC_YOUNG_THRESHOLD", "settle_heap"]

GC_YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Call once start-up is done: freeze what exists, collect young objects in batches.

    Modules, classes, validators and the state read at start live as long as the process;
    freezing them keeps every later full collection from walking them again.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
