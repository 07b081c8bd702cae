"""The worker side of the benchmark: a process that emits like a Celery task does.

Run as `python emitter.py '<json config>'`. It prints `ready`, waits for `go` on stdin, then:
`paced` emits at a fixed rate for a duration, `burst` emits N events as fast as it can until
they are stored and published, `cost` times the caller's side of emit() and progress().
Its last stdout line is a JSON result. taskcast emits with `realtime.Emitter` (the worker
path); the anchor with `socketio.RedisManager(write_only=True)`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """This process's CPU seconds, every thread included (the publisher thread too)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def make_sender(system: str, redis_url: str) -> tuple[Callable[[str, dict[str, Any]], None], Any]:
    """`send(target, data)` for one system; target is "topic" or a user/room id like "b17"."""
    if system == "taskcast":
        from taskcast.realtime import Emitter

        emitter = Emitter(redis_url, buffer=1_000_000)

        def send(target: str, data: dict[str, Any]) -> None:
            if target == "topic":
                emitter.emit("notification", data=data, topic="notifications")
            else:
                emitter.emit("notification", data=data, user_id=target)

        return send, emitter
    if system in ("floor", "wire"):
        import orjson
        import redis

        client = redis.Redis.from_url(redis_url)

        def send_floor(target: str, data: dict[str, Any]) -> None:
            channel = "topic:notifications" if target == "topic" else f"user:{target}"
            client.publish(channel, orjson.dumps({"type": "notification", "data": data}))

        return send_floor, client
    import socketio

    manager = socketio.RedisManager(redis_url, write_only=True)

    def send_anchor(target: str, data: dict[str, Any]) -> None:
        manager.emit("event", data, namespace="/", room=target)

    return send_anchor, manager


def flush(handle: Any) -> None:
    if hasattr(handle, "flush") and not handle.flush(timeout=300):
        raise SystemExit("emitter flush timed out")


def paced(conf: dict[str, Any], send: Callable[[str, dict[str, Any]], None], handle: Any) -> dict:
    rate, duration = float(conf["rate"]), float(conf["duration"])
    targets: list[str] = conf["targets"]
    eid = conf.get("eid", 0)
    total = int(rate * duration)
    ntargets = len(targets)
    cpu0, start = own_cpu(), time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            send(
                targets[sent % ntargets],
                # n counts per target, so each subscriber can check it sees every one of its events.
                {
                    "title": "bench",
                    "message": "m",
                    "t": time.time(),
                    "n": sent // ntargets,
                    "e": eid,
                },
            )
            sent += 1
        ahead = sent / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
    loop_s = time.perf_counter() - start
    flush(handle)
    done_s = time.perf_counter() - start
    cpu = own_cpu() - cpu0
    return {"emitted": sent, "loop_s": loop_s, "done_s": done_s, "rate": sent / done_s, "cpu": cpu}


def burst(conf: dict[str, Any], send: Callable[[str, dict[str, Any]], None], handle: Any) -> dict:
    total = int(conf["count"])
    targets: list[str] = conf["targets"]
    ntargets = len(targets)
    cpu0, start = own_cpu(), time.perf_counter()
    for n in range(total):
        send(targets[n % ntargets], {"title": "bench", "message": "m", "t": time.time(), "n": n})
    flush(handle)
    elapsed = time.perf_counter() - start
    cpu = own_cpu() - cpu0
    return {"emitted": total, "elapsed": elapsed, "rate": total / elapsed, "cpu": cpu}


def cost(conf: dict[str, Any], send: Callable[[str, dict[str, Any]], None], handle: Any) -> dict:
    """Caller-side µs per emit() and per progress(): wall time and the calling thread's CPU."""
    total = int(conf["count"])
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for n in range(total):
        send("bcost", {"title": "bench", "message": "m", "n": n})
    emit_wall, emit_cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    flush(handle)
    progress = make_progress(conf["system"], handle)
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for n in range(total):
        progress(n, total)
    progress_wall, progress_cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    flush(handle)
    us = 1e6 / total
    return {
        "emit_us": emit_wall * us,
        "emit_cpu_us": emit_cpu * us,
        "progress_us": progress_wall * us,
        "progress_cpu_us": progress_cpu * us,
    }


def make_progress(system: str, handle: Any) -> Callable[[int, int], None]:
    """`self.progress(current, total)` of a real TaskcastTask, or the anchor's equivalent emit."""
    if system == "taskcast":
        from celery import Celery

        from taskcast.realtime import emitter
        from taskcast.workers.task import TaskcastTask

        emitter._default = handle  # the task's emitter.default() is this process's emitter
        app = Celery("bench", task_cls=TaskcastTask, set_as_current=False)

        @app.task(bind=True, name="bench.progress")  # type: ignore[misc]
        def job(self: TaskcastTask) -> None:
            """A real task object, so `self.progress` runs exactly as inside a worker."""

        task = app.tasks["bench.progress"]
        task.push_request(id="bench-task")
        return task.progress  # type: ignore[no-any-return]

    def progress(current: int, total: int) -> None:
        data = {"current": current, "total": total, "percent": 100.0 * current / total}
        handle.emit("progress", data, namespace="/", room="task-bench")

    return progress


def main() -> None:
    conf = json.loads(sys.argv[1])
    send, handle = make_sender(conf["system"], conf["redis_url"])
    send("bwarm", {"title": "warm", "message": "m", "n": -1})  # connect before timing
    flush(handle)
    # As taskcast's Celery worker does in each pool process (worker_process_init), for every
    # system alike: start-up objects out of the cyclic collector's sight.
    gc.freeze()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    mode = {"paced": paced, "burst": burst, "cost": cost}[conf["mode"]]
    print(json.dumps(mode(conf, send, handle)), flush=True)


if __name__ == "__main__":
    main()
