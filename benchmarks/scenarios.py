"""The benchmark scenarios: each runs once against one system and returns its figures.

Every scenario uses real processes over loopback (emitter → Redis → server → clients) and
reads CPU from /proc (utime + stime) of the server and of Redis around the measured window.
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import HERE, ROOT, Redis, Server, cpu_seconds, percentile, rss_bytes

PY = sys.executable
KIB = 1024


@dataclass
class Context:
    """What every scenario needs: the shared Redis, where logs go, and how big to go."""

    redis: Redis
    log_dir: Path
    quick: bool
    profile: bool = False
    runs: int = 0

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


def _readline(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what}: process exited with {proc.wait()}")
    return line.strip()


class Clients:
    """One load-client process (see clients.py)."""

    def __init__(
        self,
        ctx: Context,
        system: str,
        url: str,
        groups: list[dict],
        program: str = "clients.py",  # or browsers.py: real Chromium pages, one group
        **conf: Any,
    ):
        ctx.runs += 1
        self.log = open(ctx.log_dir / f"clients-{ctx.runs}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PY, str(HERE / program)], cwd=ROOT, text=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, start_new_session=True,
        )  # fmt: skip
        self._send(json.dumps({"system": system, "url": url, "groups": groups, **conf}))
        want = sum(int(g["n"]) for g in groups)
        ready = json.loads(_readline(self.proc, 600, "clients to connect"))
        self.retries = int(ready.get("retries", 0))  # subscribes answered `unavailable`
        if ready["ready"] != want:
            self.close()
            raise RuntimeError(f"only {ready['ready']} of {want} clients connected: {ready}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def visits(self) -> dict[str, Any]:
        """With churn: the visits completed since the last call."""
        self._send("visits")
        return dict(json.loads(_readline(self.proc, 30, "the visits so far")))

    def report(self, expected: int, timeout: float = 120, raw: bool = False) -> dict[str, Any]:
        self._send(f"report {expected} {timeout}{' raw' if raw else ''}")
        return dict(json.loads(_readline(self.proc, timeout + 30, "the clients' report")))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send("quit")
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class Emitters:
    """N emitter processes started together (see emitter.py); `go()` returns their results."""

    def __init__(self, ctx: Context, system: str, n: int = 1, **conf: Any) -> None:
        self.procs = []
        self.logs = []
        for eid in range(n):
            ctx.runs += 1
            log = open(ctx.log_dir / f"emitter-{ctx.runs}.log", "w")  # noqa: SIM115
            c = {"system": system, "redis_url": ctx.redis.url, "eid": eid, **conf}
            if "rate" in c:
                c["rate"] = c["rate"] / n
            proc = subprocess.Popen(
                [PY, str(HERE / "emitter.py"), json.dumps(c)], cwd=ROOT, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
            self.procs.append(proc)
            self.logs.append(log)
        for proc in self.procs:
            if _readline(proc, 120, "the emitter to connect") != "ready":
                raise RuntimeError("emitter did not start")

    def go(self) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [json.loads(_readline(p, 900, "the emitter's result")) for p in self.procs]
        for proc, log in zip(self.procs, self.logs, strict=True):
            proc.wait(30)
            log.close()
        return results


class Meter:
    """CPU seconds of the server and Redis between `start()` and `stop()`."""

    def __init__(self, server: Server | None, redis: Redis, *extra: int) -> None:
        self.pids = {"server": server.pid if server else 0, "redis": redis.child.pid}
        self.pids.update({f"x{i}": pid for i, pid in enumerate(extra)})
        self.start()

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items() if p}

    def stop(self) -> dict[str, float]:
        used = {k: cpu_seconds(p) - self.c0[k] for k, p in self.pids.items() if p}
        used["wall"] = time.perf_counter() - self.t0
        return used


@contextmanager
def serving(ctx: Context, system: str, keepalive: bool = True) -> Iterator[Server]:
    ctx.runs += 1
    server = Server(system, ctx.redis.url, ctx.log_dir, f"{system}-{ctx.runs}", keepalive)
    try:
        yield server
    finally:
        server.stop()


def _latency(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("p50_ms", "p99_ms", "max_ms")}


def _paced(
    ctx: Context, system: str, server: Server, clients: Clients, *, rate: float, duration: float,
    targets: list[str], expected_per_event: int = 1, emitters: int = 1, raw: bool = False,
) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:  # fmt: skip
    """Emit at `rate` for `duration`, wait for delivery; (client report, CPU used, emitters)."""
    em = Emitters(ctx, system, emitters, mode="paced", rate=rate, duration=duration,
                  targets=targets)  # fmt: skip
    meter = Meter(server, ctx.redis)
    sent = em.go()
    emitted = sum(r["emitted"] for r in sent)
    report = clients.report(emitted * expected_per_event, timeout=max(60, duration * 3), raw=raw)
    return report, meter.stop(), sent


# -- the scenarios ----------------------------------------------------------------------------


def emit_cost(ctx: Context, system: str) -> dict[str, Any]:
    """µs of the caller's own time per emit() and per self.progress()."""
    (result,) = Emitters(ctx, system, mode="cost", count=ctx.size(20_000, 3_000)).go()
    return result


def worker_rate(ctx: Context, system: str) -> dict[str, Any]:
    """Sustained events/s one worker process stores and publishes (100 channels, no coalescing)."""
    count = ctx.size(50_000, 10_000)
    meter = Meter(None, ctx.redis)
    targets = [f"w{i}" for i in range(100)]
    (result,) = Emitters(ctx, system, mode="burst", count=count, targets=targets).go()
    used = meter.stop()
    return {
        "events_per_s": result["rate"],
        "worker_cpu_us": 1e6 * result["cpu"] / count,
        "redis_cpu_us": 1e6 * used["redis"] / count,
    }


def one_client(ctx: Context, system: str, rate: int, deflate: bool = False) -> dict[str, Any]:
    """One client on one channel at `rate` events/s: latency, loss, CPU per event."""
    duration = ctx.size(10, 3)
    with serving(ctx, system) as server:
        clients = Clients(ctx, system, server.ws_url, [{"n": 1, "key": "topic", "sample": 1}],
                          deflate=deflate)  # fmt: skip
        try:
            profiler = _profile(ctx, server, system, f"one-client-{rate // 1000}k", duration)
            ages = _event_ages(server)
            report, used, _ = _paced(
                ctx, system, server, clients, rate=rate, duration=duration, targets=["topic"]
            )
            age = _age_quantiles(ages, _event_ages(server))
            if profiler is not None:
                profiler.wait(120)
        finally:
            clients.close()
    return {
        **_latency(report),
        **age,
        "lost": report["lost"],
        "server_cpu_us": 1e6 * used["server"] / max(1, report["received"]),
        "redis_cpu_us": 1e6 * used["redis"] / max(1, report["received"]),
    }


def _event_ages(server: Server) -> dict[float, float]:
    """taskcast_event_age_seconds buckets (le -> cumulative count); empty for the anchor."""
    if server.system != "taskcast":
        return {}
    buckets = {}
    for line in server.metrics().splitlines():
        if line.startswith("taskcast_event_age_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def _age_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Server-side emit→fan-out age, p50/p99 as bucket upper bounds (ms), over the window."""
    if not after:
        return {}
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1]
    out = {}
    for name, q in (("age_p50_ms", 0.5), ("age_p99_ms", 0.99)):
        out[name] = next((1000 * le for le, n in delta if total and n >= q * total), float("inf"))
    return out


def _profile(
    ctx: Context, server: Server, system: str, name: str, duration: float
) -> subprocess.Popen[bytes] | None:
    """With --profile: py-spy on the taskcast server for one measured window."""
    if not (ctx.profile and system == "taskcast"):
        return None
    out = ctx.log_dir / f"profile-taskcast-{name}.txt"
    return subprocess.Popen(
        [str(Path(PY).parent / "py-spy"), "record", "--pid", str(server.pid), "--format", "raw",
         "--duration", str(int(duration) + 1), "--rate", "200", "--nonblocking", "--output",
         str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def max_rate(ctx: Context, system: str) -> dict[str, Any]:
    """The highest rate (one client, one channel) with p99 ≤ 100 ms and no loss."""
    ladder = ctx.size(
        [1000, 2000, 5000, 10_000, 15_000, 20_000, 30_000, 40_000, 50_000], [1000, 5000, 10_000]
    )
    duration = ctx.size(5, 2)
    best, bound = 0, ""
    steps: list[list[Any]] = []
    with serving(ctx, system) as server:
        clients = Clients(ctx, system, server.ws_url, [{"n": 1, "key": "topic", "sample": 1}])
        try:
            for rate in ladder:
                report, _, sent = _paced(
                    ctx, system, server, clients, rate=rate, duration=duration,
                    targets=["topic"], emitters=2,
                )  # fmt: skip
                achieved = sum(r["emitted"] for r in sent) / max(r["done_s"] for r in sent)
                steps.append([rate, round(achieved), report["p99_ms"], report["lost"]])
                if report["lost"] or (report["p99_ms"] or 1e9) > 100:
                    bound = "server"
                    break
                if achieved < 0.8 * rate:  # the emitters could not offer this rate
                    best, bound = int(achieved), "emitters"
                    break
                best = rate
        finally:
            clients.close()
    # steps: [offered, achieved by the emitters, p99 ms, lost] per rung of the ladder
    return {"max_rate": best, "limited_by": bound or "ladder top", "steps": steps}


def fanout(ctx: Context, system: str, n: int, deflate: bool) -> dict[str, Any]:
    """One channel x n clients: delivered frames/s and server CPU µs per frame."""
    frames_per_s = ctx.size(20_000, 10_000)
    rate = frames_per_s / n
    duration = ctx.size(10, 3)
    procs = 2 if n >= 500 else 1
    with serving(ctx, system) as server:
        groups = [{"n": n // procs, "key": "topic", "sample": 1 if i == 0 else 0}
                  for i in range(procs)]  # fmt: skip
        loads = [Clients(ctx, system, server.ws_url, [g], deflate=deflate) for g in groups]
        try:
            meter = Meter(server, ctx.redis, *(c.pid for c in loads))
            em = Emitters(ctx, system, mode="paced", rate=rate, duration=duration,
                          targets=["topic"])  # fmt: skip
            meter.start()
            sent = em.go()
            emitted = sum(r["emitted"] for r in sent)
            reports = [c.report(emitted * g["n"]) for c, g in zip(loads, groups, strict=True)]
            used = meter.stop()
        finally:
            for c in loads:
                c.close()
    frames = sum(r["received"] for r in reports)
    client_cpu = sum(v for k, v in used.items() if k.startswith("x"))
    return {
        "frames_per_s": sum(r["frames_per_s"] for r in reports),
        "server_cpu_us_per_frame": 1e6 * used["server"] / max(1, frames),
        "client_cpu_us_per_frame": 1e6 * client_cpu / max(1, frames),
        "lost": sum(r["lost"] for r in reports),
        "p99_ms": reports[0]["p99_ms"],
    }


def fanout_chromium(ctx: Context, system: str) -> dict[str, Any]:
    """One channel x n real Chromium pages (browsers.py), each connecting from its own
    JavaScript, so with the deflate offer and compressed subscribe Chromium sends: frames/s
    delivered, server CPU µs per frame, p99 of one page. The rate is low enough for the
    pages themselves to keep up on a shared 2-core machine: the server's side is measured."""
    n = ctx.size(300, 50)
    rate, duration = 10, ctx.size(10, 4)
    with serving(ctx, system) as server:
        pages = Clients(ctx, system, server.ws_url, [{"n": n, "key": "topic", "sample": 1}],
                        program="browsers.py")  # fmt: skip
        try:
            meter = Meter(server, ctx.redis, pages.pid)
            em = Emitters(ctx, system, mode="paced", rate=rate, duration=duration,
                          targets=["topic"])  # fmt: skip
            meter.start()
            emitted = sum(r["emitted"] for r in em.go())
            report = pages.report(emitted * n)
            used = meter.stop()
        finally:
            pages.close()
    return {
        "pages": report["connections"],
        "extensions": report["extensions"],
        "frames_per_s": report["frames_per_s"],
        "delivered": report["received"] / max(1, report["expected"]),
        "server_cpu_us_per_frame": 1e6 * used["server"] / max(1, report["received"]),
        "lost": report["lost"],
        "p99_ms": report["p99_ms"],
    }


def churn(
    ctx: Context, system: str, elsewhere: bool = False, deflate: bool = False
) -> dict[str, Any]:
    """Fan-out x100 while other connections come and go (50 a second, each for half a second)
    on the same channel, or on another one (what the connections cost, without their effect
    on the fan-out): server CPU per frame delivered, latency and loss of the steady clients;
    first, with no events, the server's CPU per visit (connect, subscribe, leave)."""
    n = ctx.size(100, 50)
    rate = ctx.size(20_000, 10_000) / n
    duration = ctx.size(10, 3)
    key = "topic:system" if elsewhere else "topic"
    visits = {"rate": ctx.size(50, 20), "stay": 0.5, "key": key}
    with serving(ctx, system) as server:
        steady = Clients(ctx, system, server.ws_url, [{"n": n, "key": "topic", "sample": 1}],
                         deflate=deflate)  # fmt: skip
        try:
            coming = Clients(ctx, system, server.ws_url, [], churn=visits, deflate=deflate)
        except BaseException:
            steady.close()
            raise
        try:
            # First the visits alone, no events: what a connection costs the server.
            meter = Meter(server, ctx.redis)
            coming.visits()
            time.sleep(duration / 2)
            alone = coming.visits()
            visit_cpu = meter.stop()["server"]
            em = Emitters(ctx, system, mode="paced", rate=rate, duration=duration,
                          targets=["topic"])  # fmt: skip
            meter.start()
            sent = em.go()
            emitted = sum(r["emitted"] for r in sent)
            report = steady.report(emitted * n)
            used = meter.stop()
            came = coming.report(0)
        finally:
            steady.close()
            coming.close()
    frames = report["received"] + came["visit_frames"]
    return {
        "server_cpu_us_per_frame": 1e6 * used["server"] / max(1, frames),
        "visits_per_s": came["visits"] / used["wall"],
        "visits_failed": came["visits_failed"] + alone["visits_failed"],
        "visit_cpu_ms": 1000 * visit_cpu / max(1, alone["visits"]),
        "lost": report["lost"],
        "p99_ms": report["p99_ms"],
        **({"visit_errors": came["errors"]} if came["errors"] else {}),
    }


def spread(ctx: Context, system: str) -> dict[str, Any]:
    """n clients on n channels at 2k events/s in all: latency, loss, CPU per event."""
    n = ctx.size(1000, 200)
    rate = ctx.size(2000, 1000)
    duration = ctx.size(10, 3)
    with serving(ctx, system) as server:
        clients = Clients(ctx, system, server.ws_url,
                          [{"n": n, "key": "each", "prefix": "s", "sample": n}])  # fmt: skip
        try:
            report, used, _ = _paced(ctx, system, server, clients, rate=rate, duration=duration,
                                     targets=[f"s{i}" for i in range(n)])  # fmt: skip
        finally:
            clients.close()
    return {
        **_latency(report),
        "lost": report["lost"],
        "server_cpu_us": 1e6 * used["server"] / max(1, report["received"]),
    }


def settle(pid: int, deadline: float = 60.0) -> float:
    """Wait until a process is idle (under 5% of a core over half a second): a connection
    storm's handshakes and garbage collections are over. Returns the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < deadline:
        used = cpu_seconds(pid)
        time.sleep(0.5)  # the measuring interval itself, not a wait for an event
        if cpu_seconds(pid) - used < 0.025:
            break
    return time.monotonic() - began


IDLE_WINDOW = 5.0  # seconds of no events over which idle connections' upkeep is measured


def idle_isolation(
    ctx: Context, system: str, keepalive: bool = True, deflate: bool = False
) -> dict[str, Any]:
    """RSS per idle connection at 1k and 10k; latency of one channel with 10 vs 10k idle.

    The windows run few, many, many, few (the 10k closed again), each once the server is
    idle, so a drift in the machine's load falls on both sides; each side's latencies are
    pooled. A one-off stall of the machine moves one second's p99, so the median of the
    per-second p99s is reported beside the pooled p99. Without `keepalive` the server sends
    no WebSocket pings: what is left is what idle connections cost besides keeping them.
    With the many open and no events, the server's CPU over `IDLE_WINDOW` is what keeping
    them costs on its own. With `deflate` every client offers permessage-deflate as
    Chromium does (and so compresses its subscribe).
    """
    few, mid, many = 10, ctx.size(1000, 200), ctx.size(10_000, 1000)
    rate, duration = 1000, ctx.size(8, 3)
    out: dict[str, Any] = {}
    opened: list[Clients] = []
    samples: dict[str, list[float]] = {"few": [], "many": []}
    seconds: dict[str, list[float]] = {"few": [], "many": []}
    # server CPU per event in each window that got events (a window with none, when the
    # measured client lost its connection, counts in `lost`, not here)
    cpu: dict[str, list[float]] = {"few": [], "many": []}
    out["lost"] = 0
    windows: list[list[Any]] = []
    with serving(ctx, system, keepalive) as server:

        def measure(side: str) -> None:
            out[f"settle_s_{side}"] = max(out.get(f"settle_s_{side}", 0), settle(server.pid))
            profiler = _profile(ctx, server, system, f"isolation-{side}-{len(seconds[side])}",
                                duration)  # fmt: skip
            began = time.time()
            report, used, _ = _paced(ctx, system, server, measured, rate=rate,
                                     duration=duration, targets=["topic"], raw=True)  # fmt: skip
            # each window's side, wall-clock span and p99: `--gc` pauses can be placed in it
            windows.append([side, round(began, 3), round(time.time(), 3), report["p99_ms"]])
            if profiler is not None:
                profiler.wait(120)
            out["lost"] += report["lost"]
            if report["received"]:
                cpu[side].append(used["server"] / report["received"])
            lat = report["latencies_ms"]
            samples[side] += lat
            seconds[side] += [percentile(lat[i : i + rate], 0.99) for i in range(0, len(lat), rate)
                              if len(lat[i : i + rate]) >= rate // 2]  # fmt: skip

        def idle(n: int, offset: int) -> None:
            group = {"n": n, "key": "each", "prefix": "i", "offset": offset, "measure": False}
            opened.append(Clients(ctx, system, server.ws_url, [group], deflate=deflate))

        try:
            measured = Clients(ctx, system, server.ws_url, [{"n": 1, "key": "topic", "sample": 1}],
                               deflate=deflate)  # fmt: skip
            opened.append(measured)
            idle(few, 0)
            base = rss_bytes(server.pid)
            measure("few")
            idle(mid - few, few)
            out["rss_kib_per_conn_mid"] = (rss_bytes(server.pid) - base) / (mid - few) / KIB
            idle(many - mid, mid)
            out["rss_kib_per_conn_many"] = (rss_bytes(server.pid) - base) / (many - few) / KIB
            out["rss_mib_total"] = rss_bytes(server.pid) / KIB / KIB
            out["subscribe_retries"] = sum(c.retries for c in opened)
            out["settle_s_storm"] = settle(server.pid)
            began, used = time.monotonic(), cpu_seconds(server.pid)
            time.sleep(IDLE_WINDOW)  # the measuring interval itself, not a wait for an event
            out["idle_cpu_ms_per_s"] = (
                1e3 * (cpu_seconds(server.pid) - used) / (time.monotonic() - began)
            )
            measure("many")
            measure("many")
            for c in opened[2:]:
                c.close()
            del opened[2:]
            measure("few")
        finally:
            for c in opened:
                c.close()
    for side in ("few", "many"):
        out[f"p50_{side}_ms"] = percentile(samples[side], 0.5)
        out[f"p99_{side}_ms"] = percentile(samples[side], 0.99)
        out[f"p99s_{side}_ms"] = statistics.median(seconds[side])
        if cpu[side]:
            out[f"server_cpu_us_{side}"] = 1e6 * statistics.mean(cpu[side])
    out["iso_ratio_p50"] = out["p50_many_ms"] / out["p50_few_ms"]
    out["iso_ratio_p99"] = out["p99_many_ms"] / out["p99_few_ms"]
    out["iso_ratio_p99s"] = out["p99s_many_ms"] / out["p99s_few_ms"]
    out["windows"] = windows
    return out


def overload(ctx: Context, system: str) -> dict[str, Any]:
    """10k events/s for 40 s to one client: all delivered, or the client told — never silent."""
    rate, duration = 10_000, ctx.size(40, 5)
    with serving(ctx, system) as server:
        clients = Clients(ctx, system, server.ws_url, [{"n": 1, "key": "topic", "sample": 1}])
        try:
            report, _, sent = _paced(
                ctx, system, server, clients, rate=rate, duration=duration,
                targets=["topic"], emitters=2,
            )  # fmt: skip
        finally:
            clients.close()
    return {
        "emitted": sum(r["emitted"] for r in sent),
        "received": report["received"],
        "told": report["told"],
        "silent_loss": report["silent_loss"],
        "close_codes": report["close_codes"],
        "p99_ms": report["p99_ms"],
    }


Scenario = Callable[[Context, str], dict[str, Any]]

# name -> scenario; the order is the run order.
SCENARIOS: dict[str, Scenario] = {
    "emit_cost": emit_cost,
    "worker_rate": worker_rate,
    "one_client_1k": lambda ctx, s: one_client(ctx, s, 1000),
    "one_client_1k_deflate": lambda ctx, s: one_client(ctx, s, 1000, deflate=True),
    "one_client_5k": lambda ctx, s: one_client(ctx, s, 5000),
    "max_rate": max_rate,
    "fanout_100": lambda ctx, s: fanout(ctx, s, ctx.size(100, 50), False),
    "fanout_100_deflate": lambda ctx, s: fanout(ctx, s, ctx.size(100, 50), True),
    "fanout_1000": lambda ctx, s: fanout(ctx, s, ctx.size(1000, 200), False),
    "fanout_1000_deflate": lambda ctx, s: fanout(ctx, s, ctx.size(1000, 200), True),
    "fanout_chromium": fanout_chromium,
    "churn": churn,
    "churn_deflate": lambda ctx, s: churn(ctx, s, deflate=True),
    "churn_elsewhere": lambda ctx, s: churn(ctx, s, elsewhere=True),
    "spread": spread,
    "idle_isolation": idle_isolation,
    "idle_isolation_deflate": lambda ctx, s: idle_isolation(ctx, s, deflate=True),
    "idle_isolation_no_keepalive": lambda ctx, s: idle_isolation(ctx, s, keepalive=False),
    "overload": overload,
}
