"""The event throttle shared by bulk, the stage server's admission and the policy."""

from __future__ import annotations

from p2p.events import EventThrottle


def test_one_event_per_key_and_period_with_the_count_left_out() -> None:
    throttle = EventThrottle(every_s=10.0)
    assert throttle.admit("a", 100.0) == 0
    assert throttle.admit("a", 105.0) is None and throttle.admit("a", 109.9) is None
    assert throttle.admit("b", 105.0) == 0  # keys are throttled apart
    assert throttle.admit("a", 110.0) == 2


def test_keys_are_bounded_quiet_ones_forgotten_first() -> None:
    throttle = EventThrottle(every_s=10.0, max_keys=3)
    throttle.admit("old", 0.0)
    throttle.admit("x", 15.0)
    throttle.admit("y", 15.0)
    assert throttle.admit("z", 16.0) == 0  # full: "old" (quiet for 10 s) goes, "x" and "y" stay
    assert throttle.admit("x", 17.0) is None
    for n in range(10):  # every key fresh: the table is emptied rather than grown
        throttle.admit(n, 18.0)
    assert len(throttle._last) <= 3
