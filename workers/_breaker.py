"""Circuit breakers per (tenant, connector): one tenant's broken credentials or API fail fast.

A breaker opens after ``threshold`` consecutive counted failures, rejects that tenant's
commands for ``cooldown`` seconds, then lets exactly one probe through (half-open): a
success closes it, a failure opens it again. While it is open only that probe's verdict
counts: a command admitted before the opening (say, one that outlived the cool-down)
neither closes it nor ends the probe. Each probe has its own number, which the verdicts
carry. Other tenants are never affected. The map is bounded: the least recently used
entries go first (forgotten, so closed).
``state_of`` tells the state now; ``on_open(key)`` hears each opening (when the pool's
metrics gauge starts watching that tenant).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from core.metrics import BreakerState

__all__ = ["CircuitBreakers"]


@dataclass(slots=True)
class _State:
    failures: int = 0
    open_until: float | None = None
    probe: int = 0  # the number of the half-open probe that is out; 0: none


class CircuitBreakers:
    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[str], None] | None = None,
    ) -> None:
        if threshold < 1 or max_entries < 1:
            raise ValueError("threshold and max_entries must be >= 1")
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_entries = max_entries
        self._clock = clock
        self._on_open = on_open
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._probes = 0

    def __len__(self) -> int:
        return len(self._states)

    def admit(self, key: str) -> int | None:
        """May a command for ``key`` run now? None: refused. Otherwise its probe number for
        the verdicts: 0 for an ordinary admission, the probe's own when it is the half-open
        probe (admitted once per cool-down)."""
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return 0
        self._states.move_to_end(key)
        if state.probe or self._clock() < state.open_until:
            return None
        self._probes += 1
        state.probe = self._probes
        return state.probe

    def allow(self, key: str) -> bool:
        return self.admit(key) is not None

    def retry_after(self, key: str) -> float:
        """Seconds until the breaker of ``key`` lets a probe through (0 when closed)."""
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return 0.0
        return max(0.0, state.open_until - self._clock())

    def state_of(self, key: str) -> BreakerState:
        """Now: half-open while the probe is out, open during the cool-down, else closed:
        after the cool-down nothing is refused (the next command goes, as the probe), and
        a tenant that sends nothing more here (its partitions moved) must not read open."""
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return BreakerState.CLOSED
        if state.probe:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN if self._clock() < state.open_until else BreakerState.CLOSED

    def is_open(self, key: str) -> bool:
        state = self._states.get(key)
        return state is not None and state.open_until is not None

    def success(self, key: str, probe: int = 0) -> None:
        if self._counts(key, probe):
            self._states.pop(key, None)

    def failure(self, key: str, probe: int = 0) -> None:
        if not self._counts(key, probe):
            return
        state = self._states.get(key)
        if state is None:
            state = _State()
            self._states[key] = state
            while len(self._states) > self.max_entries:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        state.failures += 1
        if state.probe or state.failures >= self.threshold:
            state.open_until = self._clock() + self.cooldown
            state.probe = 0
            if self._on_open is not None:
                self._on_open(key)

    def cancel_probe(self, key: str, probe: int) -> None:
        """Probe ``probe`` ended without a verdict (e.g. shutdown): allow another probe."""
        state = self._states.get(key)
        if state is not None and probe and state.probe == probe:
            state.probe = 0

    def _counts(self, key: str, probe: int) -> bool:
        """Closed, every verdict counts; open, only the current probe's."""
        state = self._states.get(key)
        return state is None or state.open_until is None or (probe != 0 and state.probe == probe)
