"""The benchmark's real processes: a private redis-server, the two servers, and /proc readings."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
SECRET = "benchmark-secret-" + "x" * 40
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `check` until true; raise naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile of `values` by nearest rank, as every report of the benchmark takes it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the new limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Child:
    """A child process in its own session, logging to a file, stopped by its own pid only."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class Redis:
    """A private redis-server on a free port, flushed between runs."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="taskcast-bench-redis-")
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
            "--save", "", "--appendonly", "no", "--maxclients", "20000",
        ]  # fmt: skip
        self.child = Child("redis", args, dict(os.environ), log_dir)
        import redis

        self.client = redis.Redis(port=self.port, socket_timeout=10)
        wait_for(lambda: bool(self.client.ping()), 20, f"redis-server on {self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def flush(self) -> None:
        self.client.flushall()

    def close(self) -> None:
        self.client.close()
        self.child.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
        return bool(resp.status == 200)


class Server:
    """taskcast (`taskcast.api.main:create_app`), the anchor (`anchor_server:create_app`) or the floor
    (`floor_server:create_app`) under uvicorn; or the wire floor (`wire_server.py`), alone."""

    def __init__(
        self, system: str, redis_url: str, log_dir: Path, name: str, keepalive: bool = True
    ) -> None:
        self.system = system
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCAST_")}
        env.update({"REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
        common = [
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", "--no-access-log", "--factory",
            *([] if keepalive else ["--ws-ping-interval", "0"]),  # uvicorn's WebSocket pings
        ]  # fmt: skip
        if system == "taskcast":
            env.update(
                {
                    "TASKCAST_JWT_SECRET": SECRET,
                    "TASKCAST_MAX_CONNECTIONS_PER_USER": "1000000",
                    "TASKCAST_NODE_ID": "bench",
                }
            )
            args = [str(BIN / "uvicorn"), "taskcast.api.main:create_app", *common]
            args += ["--http", "taskcast.api.wsprotocol:HttpProtocol"]  # as the Procfile runs it
            args += ["--ws", "taskcast.api.wsprotocol:WebSocketProtocol"]
            ready = f"http://127.0.0.1:{self.port}/healthz"
        elif system == "wire":  # no server around it and no pings to turn off
            args = [str(BIN / "python"), str(HERE / "wire_server.py"), str(self.port)]
            ready = f"http://127.0.0.1:{self.port}/"
        elif system == "floor":  # plain uvicorn: its own websockets-sansio protocol
            args = [str(BIN / "uvicorn"), "floor_server:create_app", "--app-dir", str(HERE)]
            args += common
            ready = f"http://127.0.0.1:{self.port}/"
        else:
            args = [str(BIN / "uvicorn"), "anchor_server:create_app", "--app-dir", str(HERE)]
            args += common
            ready = f"http://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=polling"
        self.child = Child(name, args, env, log_dir)
        try:
            wait_for(lambda: _http_ok(ready), 60, f"{system} server on {self.port}")
        except TimeoutError:
            self.child.stop()
            raise RuntimeError(f"{system} server did not start:\n{self.child.tail()}") from None

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def ws_url(self) -> str:
        if self.system in ("taskcast", "floor", "wire"):
            return f"ws://127.0.0.1:{self.port}/ws"
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"

    def metrics(self) -> str:
        """taskcast's /metrics text (the anchor has none)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        self.child.stop()
