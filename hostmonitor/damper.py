"""Damping: act on a state only once it held, never on one observation.

A link that bounces, a peer that misses one poll, a storage check that times out once:
each would be a false recovery if acted on at once. hostmonitor's deciders that damp do
it the same way, with this one class: the local source (the matrix's actions, keyed by
"actions"; role changes, for the flap count) and the Pacemaker poll driver (each peer's
online flag, keyed by node name).

A value is *settled* once it was observed ``samples`` times in a row (``[host]
monitoring_samples``) and its streak began at least ``hold_down`` seconds ago
(``[hostmonitor] hold_down``; 0 for the Pacemaker poll, whose interval already spaces the
samples). A different value starts a new streak (count 1) and counts a flap for the key,
so flapping is visible (health, log) without being acted on over and over.

Pure: no threads, no I/O, no logging; the caller serializes its calls and passes the
clock (monotonic by default) when a test wants one.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Hashable


@dataclasses.dataclass(frozen=True)
class Streak:
    value: object         # what was observed, the same ``count`` times in a row
    count: int            # observations of ``value`` in a row (>= 1)
    since: float          # clock when the streak began
    changed: bool = False  # this observation ended a streak of another value (a flap)


class Damper:
    """Streaks of consecutive agreeing observations, per key."""

    def __init__(self, samples: int = 1, hold_down: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.samples = samples
        self.hold_down = hold_down
        self.clock = clock
        self.flaps: dict[Hashable, int] = {}   # key -> changes of value seen
        self._streaks: dict[Hashable, Streak] = {}

    def configure(self, samples: int, hold_down: float = 0.0) -> None:
        """New thresholds (a reload); streaks under way keep their count and start."""
        self.samples, self.hold_down = samples, hold_down

    def observe(self, key: Hashable, value) -> Streak:
        """One observation of ``key``: the same value as before extends its streak, another
        one starts a new streak (and counts a flap when there was one before)."""
        old = self._streaks.get(key)
        if old is not None and old.value == value:
            new = Streak(value, old.count + 1, old.since)
        else:
            new = Streak(value, 1, self.clock(), changed=old is not None)
            if old is not None:
                self.flaps[key] = self.flaps.get(key, 0) + 1
        self._streaks[key] = new
        return new

    def streak(self, key: Hashable) -> Streak | None:
        """The current streak of ``key`` (None before its first observation)."""
        return self._streaks.get(key)

    def held(self, key: Hashable) -> float:
        """Seconds since the current streak of ``key`` began (0 when there is none)."""
        s = self._streaks.get(key)
        return 0.0 if s is None else self.clock() - s.since

    def settled(self, key: Hashable) -> bool:
        """The current value of ``key`` was seen ``samples`` times in a row and has held
        for ``hold_down`` seconds: it may be acted on."""
        s = self._streaks.get(key)
        return (s is not None and s.count >= self.samples
                and self.clock() - s.since >= self.hold_down)

    def wait_left(self, key: Hashable) -> float:
        """Seconds until the hold-down of the current streak of ``key`` is over (0 when it
        is over or there is none): when to look again without waiting for a push."""
        s = self._streaks.get(key)
        if s is None or not self.hold_down:
            return 0.0
        return max(0.0, s.since + self.hold_down - self.clock())

    def forget(self, key: Hashable) -> None:
        """Drop the streak of ``key`` (its next observation starts afresh, not a flap)."""
        self._streaks.pop(key, None)

    def flap_total(self) -> int:
        return sum(self.flaps.values())
