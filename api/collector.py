"""The web node's cyclic garbage collector: full collections walk only what is new.

A node holding 10,000 connections holds ~800k objects the collector tracks. CPython runs a
full collection whenever a quarter as many again have survived the younger generations
(connections opening, keep-alive timers, sessions), and each one walks the whole heap: on
a small machine 0.3-0.5 s in which no socket on the node is served. After every full
collection its survivors are frozen (`gc.freeze()`), so the next one walks only what came
since. What dies is still freed by reference counting (closed connections are; tests hold
it); a cycle among frozen objects would not be, so once the frozen heap has grown past
`growth` times its size after the last whole-heap collection, everything is unfrozen and
the next full collection walks it all once.
"""

from __future__ import annotations

import gc
from typing import Final

from taskcast.realtime.metrics import COUNTS

GROWTH: Final = 2.0


class Collector:
    """Install once per process (the app's lifespan); `uninstall` hands the heap back."""

    def __init__(self, growth: float = GROWTH) -> None:
        self.growth = growth
        self.baseline = 0  # frozen objects after the last whole-heap collection
        self.sweeping = False  # everything unfrozen: the next full collection walks it all

    def install(self) -> None:
        """Collect and freeze what exists now (start-up objects), then keep freezing."""
        gc.collect()
        gc.freeze()
        self.baseline = gc.get_freeze_count()
        self.sweeping = False
        gc.callbacks.append(self._after)

    def uninstall(self) -> None:
        if self._after in gc.callbacks:
            gc.callbacks.remove(self._after)
        gc.unfreeze()

    def _after(self, phase: str, info: dict[str, int]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        COUNTS.gc_full_collections += 1
        gc.freeze()  # O(1): the generations' lists are appended to the permanent one
        frozen = gc.get_freeze_count()
        if self.sweeping:
            COUNTS.gc_whole_heap_collections += 1
            self.sweeping = False
            self.baseline = frozen
        elif frozen > self.growth * self.baseline:
            gc.unfreeze()
            self.sweeping = True
