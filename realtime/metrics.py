"""Per-process counters, exposed in Prometheus format; plain ints so the hot path pays nothing."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, fields

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector


@dataclass
class Counters:
    """Monotonic counts of this process; read at scrape time, never locked."""

    events_in: int = 0
    frames_out: int = 0
    coalesced: int = 0
    slow_consumer_closes: int = 0
    publish_errors: int = 0
    redis_reconnects: int = 0
    buffer_overflows: int = 0
    emitted: int = 0
    emit_dropped: int = 0
    store_rewinds: int = 0
    not_replicated: int = 0
    rate_limited: int = 0
    gc_full_collections: int = 0
    gc_whole_heap_collections: int = 0
    reaper_sweeps: int = 0
    token_expired_closes: int = 0
    token_revoked_closes: int = 0
    token_refreshes: int = 0


COUNTS = Counters()

_HELP = {
    "events_in": "Events this node received from Redis and fanned out",
    "frames_out": "Frames written to sockets",
    "coalesced": "Queued task.progress frames replaced by a newer one",
    "slow_consumer_closes": "Connections closed with 4008",
    "publish_errors": "Failed attempts to store or publish an event (retried)",
    "redis_reconnects": "Pub/sub reconnections after a lost Redis connection",
    "buffer_overflows": "Times the pub/sub buffer filled and the hub resynced from history",
    "emitted": "Events this process stored and published",
    "emit_dropped": "Progress events dropped from a full emit buffer",
    "store_rewinds": "Channels found older in Redis than already seen, moved to a new epoch",
    "not_replicated": "Store batches fewer replicas confirmed than TASKCAST_REDIS_WAIT asks",
    "rate_limited": "Client frames refused by the rate limit",
    "gc_full_collections": "Full garbage collections (on a web node: of what is new since)",
    "gc_whole_heap_collections": "Full garbage collections that walked the whole heap",
    "reaper_sweeps": "Sweeps for tasks that can no longer end, done by this node",
    "token_expired_closes": "Connections ended because their token expired (4401)",
    "token_revoked_closes": "Connections ended because their user was revoked (4401)",
    "token_refreshes": "Tokens replaced in place by a refresh",
}

# Filled by the hub at scrape time: connections, subscriptions, channels.
GAUGES: dict[str, float] = {}

# Counts every process adds to in Redis (`Store.count`), read at scrape time: a worker has
# no `/metrics` of its own, so what it counts shows on every web node, as one total.
SHARED: dict[str, int] = {}
_SHARED_HELP = {
    "events_too_large": (
        "Events refused where they were emitted, over TASKCAST_MAX_EVENT_BYTES, by any "
        "process (a total kept in Redis: the same on every node)"
    ),
}


class Histogram:
    """A histogram for one event loop: `observe` is a bisect and two adds, no lock.

    prometheus-client's Histogram takes a lock per observation; the hub observes every event.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )


EVENT_AGE = Histogram(
    "taskcast_event_age_seconds",
    "Time from emit to the fan-out of the event on this node",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class _Collector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        for f in fields(COUNTS):
            yield CounterMetricFamily(
                f"taskcast_{f.name}", _HELP[f.name], value=getattr(COUNTS, f.name)
            )
        for name, documentation in _SHARED_HELP.items():
            yield CounterMetricFamily(f"taskcast_{name}", documentation, value=SHARED.get(name, 0))
        for name, value in GAUGES.items():
            yield GaugeMetricFamily(f"taskcast_{name}", f"Current {name} on this node", value=value)
        yield EVENT_AGE.family()


def registry() -> CollectorRegistry:
    """A registry holding taskcast's metrics (one per app, so tests can build many apps)."""
    reg = CollectorRegistry()
    reg.register(_Collector())
    return reg
