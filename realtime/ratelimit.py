"""A token bucket per connection, and the strike count that turns flooding into a close."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` frames per second with bursts of `burst`; `take()` is O(1) and allocation-free.

    Refused frames add strikes that drain at `rate` per second. A success does not reset
    them: a client pacing just above the refill would otherwise never count as flooding.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate", "strikes")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self.strikes = 0.0

    def take(self) -> bool:
        now = self._clock()
        refill = (now - self._stamp) * self.rate
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + refill)
        self.strikes = max(0.0, self.strikes - refill)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.strikes += 1.0
        return False

    @property
    def flooding(self) -> bool:
        """Refused frames keep coming faster than strikes drain: a whole burst's worth."""
        return self.strikes >= self.burst
