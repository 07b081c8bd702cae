"""Log every garbage-collection pause of 1 ms or more to stderr (`benchmarks/run --gc`).

On `PYTHONPATH`, Python imports this at start-up in every benchmark process; each process's
stderr is its log, and the harness sums the pauses per log at the end of the run.
"""

import gc
import os
import sys
import time

_started = [0.0]


def _watch(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1000
    if ms >= 1.0:
        sys.stderr.write(
            f"gc-pause pid={os.getpid()} t={time.time():.3f} gen={info['generation']} ms={ms:.2f} "
            f"collected={info['collected']}\n"
        )


gc.callbacks.append(_watch)
