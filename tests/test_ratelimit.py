"""The per-connection token bucket: bursts pass, a steady rate passes, sustained floods close."""

from __future__ import annotations

from taskcast.realtime.ratelimit import TokenBucket


class Clock:
    """A hand-driven monotonic clock, so the test states time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def send(bucket: TokenBucket, clock: Clock, frames: int, per_second: float) -> int:
    """Offer `frames` frames evenly at `per_second`; how many were accepted."""
    accepted = 0
    for _ in range(frames):
        clock.now += 1.0 / per_second
        accepted += bucket.take()
    return accepted


def test_a_burst_up_to_the_bucket_size_passes() -> None:
    """`burst` frames at once are all accepted, the next one is refused."""
    clock = Clock()
    bucket = TokenBucket(rate=50, burst=100, clock=clock)
    assert all(bucket.take() for _ in range(100))
    assert not bucket.take()
    assert not bucket.flooding


def test_steady_traffic_at_the_rate_is_never_refused() -> None:
    """A client sending at the configured rate for a minute is never refused."""
    clock = Clock()
    bucket = TokenBucket(rate=50, burst=100, clock=clock)
    assert send(bucket, clock, 3000, per_second=50) == 3000
    assert not bucket.flooding


def test_a_client_pacing_just_over_the_rate_is_throttled_not_closed() -> None:
    """At 1.5x the rate the excess is refused but the connection is not deemed flooding."""
    clock = Clock()
    bucket = TokenBucket(rate=50, burst=100, clock=clock)
    accepted = send(bucket, clock, 3000, per_second=75)
    assert 2000 <= accepted < 3000
    assert not bucket.flooding


def test_sustained_flood_is_detected_even_with_refills_between() -> None:
    """At 10x the rate the refills in between do not hide the flood: it is flagged in seconds."""
    clock = Clock()
    bucket = TokenBucket(rate=50, burst=100, clock=clock)
    for _ in range(5000):
        clock.now += 1.0 / 500
        bucket.take()
        if bucket.flooding:
            break
    assert bucket.flooding
    assert clock.now < 2.0


def test_strikes_drain_when_the_client_calms_down() -> None:
    """After a flood pauses, the client is trusted again and its frames pass."""
    clock = Clock()
    bucket = TokenBucket(rate=50, burst=100, clock=clock)
    for _ in range(150):
        bucket.take()
    assert bucket.strikes > 0
    clock.now += 5.0
    assert bucket.take()
    assert not bucket.flooding
