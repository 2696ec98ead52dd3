"""Circuit breakers per tenant: open after N failures, fail fast, one half-open probe."""

from __future__ import annotations

from core.metrics import BreakerState
from workers._breaker import CircuitBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_only_for_that_tenant():
    clock = Clock()
    breakers = CircuitBreakers(threshold=3, cooldown=10, clock=clock)
    for _ in range(3):
        assert breakers.allow("a")
        breakers.failure("a")
    assert not breakers.allow("a")
    assert breakers.allow("b")
    assert breakers.retry_after("a") == 10


def test_success_resets_the_failure_count():
    breakers = CircuitBreakers(threshold=2, cooldown=10, clock=Clock())
    breakers.failure("a")
    breakers.success("a")
    breakers.failure("a")
    assert breakers.allow("a")


def test_half_open_lets_exactly_one_probe_through():
    clock = Clock()
    breakers = CircuitBreakers(threshold=1, cooldown=5, clock=clock)
    breakers.failure("a")
    clock.now = 5.0
    probe = breakers.admit("a")
    assert probe  # the probe
    assert not breakers.allow("a")  # everyone else waits for its verdict
    breakers.failure("a", probe)  # probe failed: open again for a full cool-down
    clock.now = 9.0
    assert not breakers.allow("a")
    clock.now = 10.0
    probe = breakers.admit("a")
    assert probe
    breakers.success("a", probe)
    assert breakers.admit("a") == 0 and breakers.admit("a") == 0  # closed: ordinary admissions


def test_cancelled_probe_allows_another_probe():
    clock = Clock()
    breakers = CircuitBreakers(threshold=1, cooldown=1, clock=clock)
    breakers.failure("a")
    clock.now = 2
    probe = breakers.admit("a")
    assert probe
    breakers.cancel_probe("a", probe)
    assert breakers.admit("a")


def test_only_the_current_probe_has_a_verdict_while_open():
    clock = Clock()
    breakers = CircuitBreakers(threshold=1, cooldown=5, clock=clock)
    early = breakers.admit("a")  # let in while closed; it will outlive the cool-down
    assert early == 0
    breakers.failure("a")
    clock.now = 5.0
    probe = breakers.admit("a")
    assert probe
    breakers.success("a", early)  # neither closes the breaker ...
    assert breakers.state_of("a") is BreakerState.HALF_OPEN and not breakers.allow("a")
    breakers.failure("a", early)  # ... nor ends the probe with its own failure
    breakers.cancel_probe("a", early)
    assert breakers.state_of("a") is BreakerState.HALF_OPEN
    breakers.success("a", probe)
    assert breakers.state_of("a") is BreakerState.CLOSED


def test_a_probe_of_a_forgotten_opening_has_no_say_in_the_next():
    clock = Clock()
    breakers = CircuitBreakers(threshold=1, cooldown=5, clock=clock, max_entries=1)
    breakers.failure("a")
    clock.now = 5.0
    stale = breakers.admit("a")
    breakers.failure("b")  # "a" is forgotten while its probe is out
    breakers.failure("a")
    clock.now = 10.0
    probe = breakers.admit("a")
    assert stale and probe and probe != stale
    breakers.cancel_probe("a", stale)
    breakers.failure("a", stale)
    assert breakers.state_of("a") is BreakerState.HALF_OPEN and not breakers.allow("a")


def test_breaker_map_is_bounded():
    breakers = CircuitBreakers(threshold=5, max_entries=100, clock=Clock())
    for i in range(1_000):
        breakers.failure(f"t{i}")
    assert len(breakers) == 100


def test_each_opening_is_reported():
    clock, opened = Clock(), []
    breakers = CircuitBreakers(threshold=2, cooldown=5, clock=clock, on_open=opened.append)
    breakers.failure("a")
    breakers.success("a")  # never opened: nothing to report
    breakers.failure("a")
    breakers.failure("a")
    assert opened == ["a"]
    clock.now = 5.0
    probe = breakers.admit("a")
    breakers.failure("a", probe)  # the probe failed: open again
    assert opened == ["a", "a"]


def test_the_state_read_now_follows_the_cool_down_and_forgetting():
    clock = Clock()
    breakers = CircuitBreakers(threshold=1, cooldown=5, clock=clock, max_entries=1)
    assert breakers.state_of("a") is BreakerState.CLOSED
    breakers.failure("a")
    assert breakers.state_of("a") is BreakerState.OPEN
    clock.now = 5.0  # nobody tried since: nothing is refused, the next command probes
    assert breakers.state_of("a") is BreakerState.CLOSED
    probe = breakers.admit("a")
    assert breakers.state_of("a") is BreakerState.HALF_OPEN
    breakers.failure("a", probe)
    assert breakers.state_of("a") is BreakerState.OPEN
    breakers.failure("b")  # the map holds one: "a" is forgotten, so closed
    assert breakers.state_of("a") is BreakerState.CLOSED
