"""Runs every scenario against taskcast and the anchor, alternating, and prints medians.

Usage (through `benchmarks/run`): `harness.py [--quick] [--repeats N] [--only a,b] [--profile]`.
Each repeat runs taskcast then the anchor, the next repeat the anchor first, so drift in the
machine's load hits both alike. Results go to benchmarks/results/<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from processes import HERE, Redis, raise_fd_limit
from profiles import summarise
from scenarios import SCENARIOS, Context

SYSTEMS = ("taskcast", "anchor")
# The floor (floor_server.py: a bare relay under plain uvicorn) runs where it says something:
# the server-side costs per event, per frame and per connection.
FLOOR = "floor"
FLOOR_SCENARIOS = {
    "one_client_1k",
    "one_client_1k_deflate",
    "one_client_5k",
    "fanout_100",
    "fanout_100_deflate",
    "fanout_1000",
    "fanout_1000_deflate",
    "idle_isolation",
    "idle_isolation_deflate",
    "idle_isolation_no_keepalive",
}
# The wire floor (wire_server.py: uvloop transports and a hand-written handshake, no ASGI
# server, no WebSocket library) runs where only the cost per event and per frame matters:
# what is left of a frame once everything a Python relay can skip is skipped.
WIRE = "wire"
WIRE_SCENARIOS = {"one_client_1k", "one_client_5k", "fanout_100", "fanout_1000"}
# Diagnostics that say nothing about the anchor (Engine.IO's heartbeat cannot be turned off).
NO_ANCHOR = {"idle_isolation_no_keepalive"}

# (scenario, metric, label, "lower"/"higher" is better, target on taskcast or None)
METRICS: list[tuple[str, str, str, str, str | None]] = [
    ("emit_cost", "emit_us", "emit(): caller µs/call (wall)", "lower", None),
    ("emit_cost", "emit_cpu_us", "emit(): caller thread CPU µs/call", "lower", None),
    ("emit_cost", "progress_us", "self.progress(): caller µs/call (wall)", "lower", "<= 10"),
    ("emit_cost", "progress_cpu_us", "self.progress(): caller CPU µs/call", "lower", None),
    ("worker_rate", "events_per_s", "one worker: events/s stored+published", "higher", ">= 10000"),
    ("worker_rate", "worker_cpu_us", "one worker: worker CPU µs/event", "lower", None),
    ("worker_rate", "redis_cpu_us", "one worker: Redis CPU µs/event", "lower", None),
    ("one_client_1k", "p50_ms", "1 client @1k/s: p50 ms", "lower", None),
    ("one_client_1k", "p99_ms", "1 client @1k/s: p99 ms", "lower", "<= 1"),
    (
        "one_client_1k",
        "age_p99_ms",
        "1 client @1k/s: /metrics emit→fan-out p99 ≤ ms",
        "lower",
        None,
    ),
    ("one_client_1k", "max_ms", "1 client @1k/s: max ms", "lower", None),
    ("one_client_1k", "lost", "1 client @1k/s: events lost", "lower", "== 0"),
    (
        "one_client_1k",
        "server_cpu_us",
        "1 client @1k/s: server CPU µs/event",
        "lower",
        "ratio <= 0.333",
    ),
    ("one_client_1k", "redis_cpu_us", "1 client @1k/s: Redis CPU µs/event", "lower", None),
    ("one_client_1k_deflate", "p99_ms", "1 client @1k/s deflate: p99 ms", "lower", None),
    (
        "one_client_1k_deflate",
        "server_cpu_us",
        "1 client @1k/s deflate: server CPU µs/event",
        "lower",
        None,
    ),
    ("one_client_5k", "p50_ms", "1 client @5k/s: p50 ms", "lower", None),
    ("one_client_5k", "p99_ms", "1 client @5k/s: p99 ms", "lower", "<= 10"),
    (
        "one_client_5k",
        "age_p99_ms",
        "1 client @5k/s: /metrics emit→fan-out p99 ≤ ms",
        "lower",
        None,
    ),
    ("one_client_5k", "max_ms", "1 client @5k/s: max ms", "lower", None),
    ("one_client_5k", "lost", "1 client @5k/s: events lost", "lower", "== 0"),
    (
        "one_client_5k",
        "server_cpu_us",
        "1 client @5k/s: server CPU µs/event",
        "lower",
        "ratio <= 0.333",
    ),
    ("max_rate", "max_rate", "max events/s, p99 <= 100 ms, no loss", "higher", None),
    ("fanout_100", "frames_per_s", "fan-out x100: frames/s delivered", "higher", None),
    ("fanout_100", "server_cpu_us_per_frame", "fan-out x100: server CPU µs/frame", "lower", "<= 5"),
    ("fanout_100", "lost", "fan-out x100: frames lost", "lower", "== 0"),
    ("fanout_100_deflate", "frames_per_s", "fan-out x100 deflate: frames/s", "higher", None),
    (
        "fanout_100_deflate",
        "server_cpu_us_per_frame",
        "fan-out x100 deflate: server µs/frame",
        "lower",
        "ratio <= 0.25",
    ),
    ("fanout_100_deflate", "lost", "fan-out x100 deflate: frames lost", "lower", "== 0"),
    ("fanout_100_deflate", "p99_ms", "fan-out x100 deflate: p99 ms", "lower", None),
    ("fanout_1000", "frames_per_s", "fan-out x1000: frames/s delivered", "higher", None),
    (
        "fanout_1000",
        "server_cpu_us_per_frame",
        "fan-out x1000: server CPU µs/frame",
        "lower",
        "<= 5",
    ),
    (
        "fanout_1000",
        "client_cpu_us_per_frame",
        "fan-out x1000: load-client CPU µs/frame",
        "lower",
        None,
    ),
    ("fanout_1000", "lost", "fan-out x1000: frames lost", "lower", "== 0"),
    ("fanout_1000_deflate", "frames_per_s", "fan-out x1000 deflate: frames/s", "higher", None),
    (
        "fanout_1000_deflate",
        "server_cpu_us_per_frame",
        "fan-out x1000 deflate: server µs/frame",
        "lower",
        "ratio <= 0.25",
    ),
    ("fanout_1000_deflate", "lost", "fan-out x1000 deflate: frames lost", "lower", "== 0"),
    ("fanout_1000_deflate", "p99_ms", "fan-out x1000 deflate: p99 ms", "lower", None),
    ("fanout_chromium", "frames_per_s", "Chromium pages: frames/s delivered", "higher", None),
    (
        "fanout_chromium",
        "server_cpu_us_per_frame",
        "Chromium pages: server CPU µs/frame",
        "lower",
        "ratio <= 0.25",
    ),
    ("fanout_chromium", "lost", "Chromium pages: frames lost", "lower", "== 0"),
    ("fanout_chromium", "p99_ms", "Chromium pages: p99 ms", "lower", None),
    *[
        (scenario, key, f"{name}: {label}", "lower", target)
        for scenario, name in (
            ("churn", "churn x100"),
            ("churn_deflate", "churn x100 deflate"),
            ("churn_elsewhere", "churn elsewhere"),
        )
        for key, label, target in (
            ("server_cpu_us_per_frame", "server CPU µs/frame", None),
            ("p99_ms", "p99 ms", None),
            ("lost", "frames lost", "== 0"),
            ("visits_failed", "visits failed", "== 0"),
        )
    ],
    ("churn", "visits_per_s", "churn x100: visits/s completed", "higher", None),
    (
        "churn",
        "visit_cpu_ms",
        "churn: server CPU ms per visit (connect, subscribe, leave)",
        "lower",
        None,
    ),
    ("spread", "p50_ms", "spread: p50 ms", "lower", None),
    ("spread", "p99_ms", "spread: p99 ms", "lower", None),
    ("spread", "lost", "spread: events lost", "lower", "== 0"),
    ("spread", "server_cpu_us", "spread: server CPU µs/event", "lower", None),
    ("idle_isolation", "rss_kib_per_conn_mid", "idle: server KiB/conn (mid)", "lower", None),
    ("idle_isolation", "rss_kib_per_conn_many", "idle: server KiB/conn (many)", "lower", "<= 20"),
    (
        "idle_isolation",
        "subscribe_retries",
        "idle: subscribes refused `unavailable`",
        "lower",
        "== 0",
    ),
    (
        "idle_isolation",
        "idle_cpu_ms_per_s",
        "idle: server CPU ms/s, many idle, no events",
        "lower",
        None,
    ),
    ("idle_isolation", "lost", "isolation: events lost in the measured windows", "lower", None),
    ("idle_isolation", "p99_few_ms", "isolation: p99 ms, 10 idle", "lower", None),
    ("idle_isolation", "p99_many_ms", "isolation: p99 ms, many idle", "lower", None),
    ("idle_isolation", "iso_ratio_p50", "isolation ratio p50 (many/10)", "lower", "<= 1.1"),
    ("idle_isolation", "iso_ratio_p99", "isolation ratio p99 (many/10)", "lower", "<= 1.1"),
    (
        "idle_isolation",
        "server_cpu_us_few",
        "isolation: server CPU µs/event, 10 idle",
        "lower",
        None,
    ),
    (
        "idle_isolation",
        "server_cpu_us_many",
        "isolation: server CPU µs/event, many idle",
        "lower",
        None,
    ),
    ("idle_isolation", "p99s_few_ms", "isolation: median 1-s p99 ms, 10 idle", "lower", None),
    ("idle_isolation", "p99s_many_ms", "isolation: median 1-s p99 ms, many idle", "lower", None),
    (
        "idle_isolation",
        "iso_ratio_p99s",
        "isolation ratio, median 1-s p99 (many/10)",
        "lower",
        "<= 1.1",
    ),
    *[
        ("idle_isolation_deflate", key, f"idle, deflate: {label}", "lower", target)
        for key, label, target in (
            ("rss_kib_per_conn_mid", "server KiB/conn (mid)", None),
            ("rss_kib_per_conn_many", "server KiB/conn (many)", "<= 20"),
            ("idle_cpu_ms_per_s", "server CPU ms/s, many idle, no events", None),
            ("iso_ratio_p99", "isolation ratio p99 (many/10)", "<= 1.1"),
            ("server_cpu_us_many", "server CPU µs/event, many idle", None),
        )
    ],
    *[
        ("idle_isolation_no_keepalive", key, f"no WebSocket pings: {label}", "lower", None)
        for key, label in (
            ("iso_ratio_p50", "isolation ratio p50"),
            ("iso_ratio_p99", "isolation ratio p99"),
            ("iso_ratio_p99s", "isolation ratio, median 1-s p99"),
            ("server_cpu_us_few", "server CPU µs/event, 10 idle"),
            ("server_cpu_us_many", "server CPU µs/event, many idle"),
            ("idle_cpu_ms_per_s", "server CPU ms/s, many idle, no events"),
        )
    ],
    ("overload", "emitted", "overload 10k/s: events emitted", "higher", None),
    ("overload", "received", "overload 10k/s: events received", "higher", None),
    ("overload", "told", "overload 10k/s: client told (4008/recovered:false)", "higher", None),
    ("overload", "silent_loss", "overload 10k/s: events lost silently", "lower", "== 0"),
]


def send_floor(sockets: int = 100, rounds: int = 300, size: int = 200) -> float:
    """CPU µs per `send()` of one WebSocket-sized frame on loopback TCP, from plain Python.

    One system call per socket per frame is what any server's fan-out pays at the least
    (the receiving clients' reads are not counted): the machine's floor for µs per frame.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    pairs = []
    try:
        for _ in range(sockets):
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            pairs.append((server, client))
        frame = b"\x81\x7e" + size.to_bytes(2, "big") + b"x" * size
        spent = 0.0
        for _ in range(rounds):
            start = time.process_time()
            for server, _ in pairs:
                server.send(frame)
            spent += time.process_time() - start
            for _, client in pairs:
                client.recv(1 << 16)
        return 1e6 * spent / (rounds * sockets)
    finally:
        for server, client in pairs:
            server.close()
            client.close()
        listener.close()


def machine(redis: Redis) -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = [
        "taskcast", "broadcaster", "redis", "hiredis", "fastapi", "starlette", "uvicorn",
        "uvloop", "httptools", "websockets", "orjson", "pydantic", "python-socketio",
        "python-engineio",
    ]  # fmt: skip
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "nproc": len(__import__("os").sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis.version(),
        "commit": git,
        "loadavg_start": load,
        "send_floor_us": round(send_floor(), 2),
        "versions": versions,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def _median(values: list[Any]) -> Any:
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(nums) if nums else (values[0] if values else None)


def _verdict(target: str | None, value: Any, ratio: float | None) -> str:
    if target is None or value is None:
        return ""
    op, bound = target.replace("ratio ", "").split()
    subject = ratio if target.startswith("ratio") else value
    if subject is None or not isinstance(subject, int | float):
        return "?"
    ok = {"<=": subject <= float(bound), ">=": subject >= float(bound), "==": subject == 0}[op]
    return f"{target} {'PASS' if ok else 'FAIL'}"


def _ratio(x: Any, y: Any) -> float | None:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
    return x / y if numeric and y else None


def table(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    header = (
        "| metric | taskcast | anchor | taskcast/anchor | target | floor | taskcast/floor "
        "| wire | wire/anchor |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for scenario, key, label, _better, target in METRICS:
        if scenario not in runs:
            continue
        med = {}
        for system, results in runs[scenario].items():
            med[system] = _median([r[key] for r in results if key in r])
        t, a, f, w = (med.get(s) for s in ("taskcast", "anchor", FLOOR, WIRE))
        ratio = _ratio(t, a)
        lines.append(
            f"| {label} | {_fmt(t)} | {_fmt(a)} | {_fmt(ratio)} | {_verdict(target, t, ratio)} "
            f"| {_fmt(f)} | {_fmt(_ratio(t, f))} | {_fmt(w)} | {_fmt(_ratio(w, a))} |"
        )
    extra = []
    for scenario, per in runs.items():
        for system in per:
            for r in per[system]:
                if "error" in r:
                    extra.append(f"- {scenario} / {system}: ERROR {r['error']}")
                if "limited_by" in r:
                    extra.append(
                        f"- {scenario} / {system}: limited by {r['limited_by']}; "
                        f"[offered, achieved, p99 ms, lost]: {r.get('steps')}"
                    )
    return "\n".join(lines + (["", *sorted(set(extra))] if extra else []))


def gc_pauses(log_dir: Path) -> str:
    """Per process log: GC pauses of 1 ms or more by generation (count, longest, total)."""
    lines = ["GC pauses >= 1 ms per process log: generation: count, longest ms, total ms"]
    for log in sorted(log_dir.glob("*.log")):
        per: dict[str, list[float]] = {}
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("gc-pause "):
                fields = dict(f.split("=", 1) for f in line.split()[1:])
                per.setdefault(fields["gen"], []).append(float(fields["ms"]))
        if per:
            text = "; ".join(
                f"gen {g}: {len(v)}, {max(v):.1f}, {sum(v):.0f}" for g, v in sorted(per.items())
            )
            lines.append(f"- {log.stem}: {text}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 repeat, short, few clients")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default="", help="comma list of scenarios")
    parser.add_argument("--profile", action="store_true", help="py-spy the taskcast server")
    parser.add_argument(
        "--gc", action="store_true", help="log GC pauses >= 1 ms in every process; sum them"
    )
    parser.add_argument(
        "--systems", default="", help="comma list of taskcast, anchor, floor, wire (default: all)"
    )
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    raise_fd_limit()
    if args.gc:  # every child process inherits it and imports gcwatch/sitecustomize.py
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE / "gcwatch"), os.environ.get("PYTHONPATH", "")) if p
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = HERE / "results"
    log_dir = results / f"logs-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    redis = Redis(log_dir)
    ctx = Context(redis, log_dir, args.quick, args.profile)
    info = machine(redis)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = time.monotonic()
    try:
        for scenario in chosen:
            systems = SYSTEMS + ((FLOOR,) if scenario in FLOOR_SCENARIOS else ())
            systems += (WIRE,) if scenario in WIRE_SCENARIOS else ()
            if scenario in NO_ANCHOR:
                systems = tuple(s for s in systems if s != "anchor")
            if args.systems:
                systems = tuple(s for s in systems if s in args.systems.split(","))
            runs[scenario] = {s: [] for s in systems}
            for rep in range(repeats):
                order = systems if rep % 2 == 0 else systems[::-1]
                for system in order:
                    redis.flush()
                    t0 = time.monotonic()
                    try:
                        result = SCENARIOS[scenario](ctx, system)
                    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the rest
                        traceback.print_exc()
                        result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                    result["seconds"] = round(time.monotonic() - t0, 1)
                    runs[scenario][system].append(result)
                    print(f"{scenario:<22} {system:<9} rep {rep + 1}: {json.dumps(result)}",
                          flush=True)  # fmt: skip
    finally:
        redis.close()
    with open("/proc/loadavg") as f:
        info["loadavg_end"] = " ".join(f.read().split()[:3])
    info["minutes"] = round((time.monotonic() - started) / 60, 1)
    info["mode"] = "quick" if args.quick else "full"
    info["repeats"] = repeats
    text = table(runs)
    head = (
        f"{info['mode']} run, {repeats} repeat(s), {info['minutes']} min, commit {info['commit']}\n"
        f"machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
        f"load {info['loadavg_start']} -> {info['loadavg_end']}; one send() of a 200-byte "
        f"frame on loopback TCP: {info['send_floor_us']} µs CPU\n"
        f"Python {info['python']}, redis-server {info['redis_server']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    )
    print("\n" + head + "\n\n" + text)
    (results / f"{stamp}.json").write_text(json.dumps({"machine": info, "runs": runs}, indent=1))
    (results / f"{stamp}.md").write_text(head + "\n\n" + text + "\n")
    print(f"\nsaved benchmarks/results/{stamp}.md and .json; logs in {log_dir}")
    if args.gc:
        print("\n" + gc_pauses(log_dir))
    for profile in sorted(log_dir.glob("profile-*.txt")):
        summary = results / f"{stamp}-{profile.stem}-summary.txt"
        summary.write_text(summarise(profile))
        print(f"profile summary: {summary}")


if __name__ == "__main__":
    main()
