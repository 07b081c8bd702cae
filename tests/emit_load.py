"""A separate emitting process for load tests: `python -m tests.emit_load URL USER N RATE SIZE`."""

from __future__ import annotations

import sys
import time

from taskcast.realtime import Emitter


def main() -> None:
    url, user, count, rate, size = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    emitter = Emitter(url, history_size=count + 10, history_max_bytes=count * (size + 1024))
    payload = "x" * size
    start = time.monotonic()
    for i in range(count):
        emitter.emit("notification", data={"title": f"n{i}", "message": payload}, user_id=user)
        ahead = start + (i + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # paces the load; this process synchronises with nothing
    if not emitter.flush(30):
        sys.exit("flush timed out")


if __name__ == "__main__":
    main()
