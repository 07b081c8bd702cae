"""A token bucket per connection, and the strike count that turns flooding into a close."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` frames per second with bursts of `burst`; `take()` is O(1) and allocation-free."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate", "strikes")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self.strikes = 0

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    @property
    def flooding(self) -> bool:
        """Refused frames keep coming: as many as a whole burst in a row."""
        return self.strikes >= self.burst
