"""Real processes for tests: a private redis-server, uvicorn serving the app, Celery workers."""

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
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `check` until it is true; fail naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from taskcast.realtime.embedded import redis_server_binary

    return redis_server_binary()


def self_signed(folder: str) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) paths."""
    ca, ca_key = os.path.join(folder, "ca.crt"), os.path.join(folder, "ca.key")
    cert, key = os.path.join(folder, "redis.crt"), os.path.join(folder, "redis.key")
    csr, ext = os.path.join(folder, "redis.csr"), os.path.join(folder, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=taskcast test CA", "-keyout", ca_key, "-out", ca],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", ext, "-out", cert],
    ):  # fmt: skip
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    return ca, cert, key


class RedisServer:
    """A private redis-server on a free port; tests may stop and restart it.

    `tls` serves TLS only (a CA made for the test signs its certificate); `unix` serves a
    unix socket only.
    """

    def __init__(
        self,
        appendonly: bool = False,
        tls: bool = False,
        unix: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.extra = list(extra)  # more redis-server arguments (e.g. --replicaof)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="taskcast-redis-")
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = self_signed(self.dir) if tls else None
        self.socket = os.path.join(self.dir, "redis.sock") if unix else None

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """The server's URL with database `db` (in the path, or the query for a socket)."""
        if self.socket is not None:
            return f"unix://{self.socket}?db={db}"
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/{db}?ssl_ca_certs={self.tls[0]}"
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]  # fmt: skip
        if self.socket is not None:
            args += ["--port", "0", "--unixsocket", self.socket]
        elif self.tls is not None:
            ca, cert, key = self.tls
            args += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            wait_for(lambda: bool(client.ping()), 10, f"redis-server at {self.url}")
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(10)
        self.proc = None

    def restart(self, down_for: float = 0.0, flush: bool = False, graceful: bool = False) -> None:
        """Stop the server (its clients see the connection drop), optionally lose data, start.

        `graceful` stops with SIGTERM, so an append-only file is flushed and nothing is lost.
        """
        self.stop(kill=not graceful)
        if flush:
            for name in os.listdir(self.dir):
                if name != "redis.log":
                    path = os.path.join(self.dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        if down_for:
            time.sleep(down_for)  # the outage itself is what the test injects, not a sync wait
        self.start()

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url_for(db), socket_timeout=5)

    def close(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)


SENTINEL_SERVICE = "tc"


class SentinelSet:
    """A master, a replica and three Sentinels (quorum 2) on private ports: a failover in
    about a second after the master stops answering (`down-after-milliseconds` 500)."""

    def __init__(self, sentinels: int = 3) -> None:
        self.master = RedisServer()
        self.master.start()
        self.replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.replica.start()
        self.dir = tempfile.mkdtemp(prefix="taskcast-sentinel-")
        self.ports = [free_port() for _ in range(sentinels)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lagging = self.replica
        for i, port in enumerate(self.ports):
            conf = os.path.join(self.dir, f"sentinel{i}.conf")
            with open(conf, "w") as out:  # Sentinel rewrites its own config file
                out.write(
                    f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"logfile {self.dir}/sentinel{i}.log\n"
                    f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 500\n"
                    f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
                    f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
                )
            self.procs.append(
                subprocess.Popen(
                    [redis_binary(), conf, "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            wait_for(self._watching, 20, "the Sentinels to see the master, its replica, each other")
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/0"

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def _watching(self) -> bool:
        for port in self.ports:
            client = self._client(port)
            try:
                state = client.sentinel_master(SENTINEL_SERVICE)
            finally:
                client.close()
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
        return True

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers says."""
        for port in self.ports:
            found = self._port_of(port)
            if found is not None:
                return found
        raise RuntimeError("no Sentinel answered")

    def current(self) -> tuple[RedisServer, RedisServer]:
        """(master, replica) as the Sentinels see them."""
        if self.master_port() == self.master.port:
            return self.master, self.replica
        return self.replica, self.master

    def cut_replication(self) -> None:
        """The master goes on taking writes its replica never receives: the replication link is
        cut and the replica's logins refused (a user the master does not know), as if the
        network between them had failed."""
        master, replica = self.current()
        with replica.client() as client:
            client.config_set("masteruser", "nobody-here")
            client.config_set("masterauth", "wrong")
        with master.client() as client:
            client.execute_command("CLIENT", "KILL", "TYPE", "replica")
        self._lagging = replica

    def kill_master_of_lagging_replica(self) -> int:
        """SIGKILL the master after `cut_replication`: its replica, promoted next, lacks every
        write since the cut. Returns the dead master's port."""
        lagging = self._lagging
        master = self.master if lagging is self.replica else self.replica
        port = master.port
        master.stop(kill=True)
        return port

    def kill_master(self) -> RedisServer:
        """SIGKILL the master (no chance to send what its replica lacks); the one killed."""
        killed = self.master if self.master_port() == self.master.port else self.replica
        killed.stop(kill=True)
        return killed

    def wait_failover(self, away_from: int, timeout: float = 20.0) -> None:
        def moved() -> bool:
            return all(self._port_of(p) not in (None, away_from) for p in self.ports)

        wait_for(moved, timeout, "the Sentinels to promote the replica")

    def _port_of(self, sentinel_port: int) -> int | None:
        client = self._client(sentinel_port)
        try:
            found = client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        except redis.RedisError:
            return None
        finally:
            client.close()
        return int(found[1]) if found else None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.master.close()
        self.replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def base_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCAST_")}
    env.update(
        {
            "REDIS_URL": redis_url,
            "TASKCAST_JWT_SECRET": SECRET,
            "TASKCAST_STEP_DELAY": "0.02",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("BROADCAST_URL", None)
    env.update(extra)
    return env


class Process:
    """A child process whose output goes to a log file that failures can print."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class Web(Process):
    """uvicorn serving the app, as the Procfile's `web` process does."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        name: str = "web",
        port: int | None = None,
        factory: str = "taskcast.api.main:create_app",
        prefix: str = "",
        protocols: bool = True,
    ) -> None:
        self.port = port or free_port()  # a restart test reuses the port clients know
        args = [
            str(BIN / "uvicorn"), "--factory", factory,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--ws-max-size", "65536", "--timeout-graceful-shutdown", "3",
        ]  # fmt: skip
        if protocols:  # taskcast's own, as the Procfile runs it; else uvicorn's
            args += ["--http", "taskcast.api.wsprotocol:HttpProtocol"]
            args += ["--ws", "taskcast.api.wsprotocol:WebSocketProtocol"]
        super().__init__(name, args, env, log_dir)
        self.url = f"http://127.0.0.1:{self.port}{prefix}"
        self.ws_url = f"ws://127.0.0.1:{self.port}{prefix}/ws"

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200

        wait_for(ready, timeout, f"{self.name} /readyz")


class Worker(Process):
    """A real Celery worker process (prefork, like production)."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        name: str = "worker",
        concurrency: int = 1,
        app: str = "taskcast.workers.app",
        queues: str | None = None,
    ) -> None:
        args = [
            str(BIN / "celery"), "-A", app, "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency), "--hostname", f"{name}-{free_port()}@%h",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        if queues:
            args += ["--queues", queues]
        super().__init__(name, args, env, log_dir)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            return " ready." in self.log()

        wait_for(ready, timeout, f"{self.name} to be ready")
