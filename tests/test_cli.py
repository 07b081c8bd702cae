"""The `taskcast` command: `up` runs the whole product, `token`, `order` and `watch` use it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from taskcast.realtime.tokens import verify

from .processes import BIN, free_port, wait_for
from .wsclient import WS, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TASKCAST = str(BIN / "taskcast")


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKCAST_", "REDIS_", "BROADCAST_")) and k != "PORT"
    }
    env.update({"TASKCAST_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1", **extra})
    return env


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc), e.g. Redis, uvicorn, celery and its pool."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            text = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        children = {int(p) for p in text.split()}
        pending.extend(children - found)
        found |= children
    return found


def ours(marker: str) -> set[int]:
    """Live processes whose environment or command line holds `marker` (a unique tmp path)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob and running(int(entry.name)):
            found.add(int(entry.name))
    return found


def command(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Up:
    """`taskcast up` as a user runs it, in its own session so a SIGINT is a terminal Ctrl-C."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.out_path = tmp_path / "up.out"
        self.err_path = tmp_path / "up.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [TASKCAST, "up"],
                env=cli_env(tmp_path, PORT=str(self.port), TASKCAST_STEP_DELAY="0.05", **env),
                cwd=tmp_path,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 60.0) -> tuple[str, str]:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"taskcast up exited:\n{self.err_path.read_text()[-3000:]}")
            return "press Ctrl-C" in self.output()

        wait_for(started, timeout, "taskcast up to print its URL and token", interval=0.1)
        url = re.search(r"http://127\.0\.0\.1:\d+", self.output())
        token = re.search(r"^eyJ[\w-]+\.[\w-]+\.[\w-]+$", self.output(), re.MULTILINE)
        assert url is not None, self.output()
        assert token is not None, self.output()
        return url.group(0), token.group(0)

    def interrupt(self, timeout: float = 45.0) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Teardown after a failed test: SIGKILL `up` and the process groups it started."""
        if self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def up(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Up]:
    """A running `taskcast up` with no REDIS_URL; killed at teardown if the test did not stop it."""
    proc = Up(tmp_path)
    yield proc
    proc.kill()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:  # say what the processes said
        for log in [proc.err_path, *sorted((tmp_path / "data" / "logs").glob("*.log"))]:
            print(f"\n===== {log.name} =====\n{log.read_text(errors='replace')[-4000:]}")


def cli(*args: str, env: dict[str, str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKCAST, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def tail_until_terminal(channel: str, env: dict[str, str], out: Path) -> list[dict[str, Any]]:
    """Run `taskcast tail CHANNEL --since 0` until it printed a terminal event, then Ctrl-C it."""
    with out.open("wb") as sink, out.with_suffix(".err").open("wb") as errors:
        proc = subprocess.Popen(
            [TASKCAST, "tail", channel, "--since", "0"], env=env, stdout=sink, stderr=errors
        )
    try:
        wait_for(lambda: b'"task.succeeded"' in out.read_bytes(), 20, "tail to print the end")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.timeout(120)
async def test_up_runs_the_product_and_stops_cleanly(up: Up, tmp_path: Path) -> None:
    """`up` gives URL and token; orders stream to /ws and `tail`; `watch` exits 0/1; ^C ends all."""
    url, token = up.wait_started()
    assert url == f"http://127.0.0.1:{up.port}"
    children = descendants(up.proc.pid)
    assert any(b"redis-server" in command(pid) for pid in children)
    headers = {"Authorization": f"Bearer {token}"}

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        reply = await http.post(
            "/orders", json={"customer_id": "c1", "items": [{"sku": "A1", "qty": 2}]}
        )
        assert reply.status_code == 202, reply.text
        ok_task = reply.json()["task_id"]
        ws = await WS.open(f"ws://127.0.0.1:{up.port}/ws", additional_headers=headers)
        assert (await ws.recv(10))["type"] == "welcome"
        assert (await ws.subscribe(f"task:{ok_task}", since=0))["type"] == "subscribed"
        last = await ws.recv_until(terminal, timeout=30)
        assert last["event"]["type"] == "task.succeeded"
        seqs = [f["seq"] for f in ws.events()]
        assert seqs == list(range(1, len(seqs) + 1))
        await ws.close()
        reply = await http.post(
            "/orders", json={"customer_id": "fail-x", "items": [{"sku": "A1", "qty": 1}]}
        )
        failing_task = reply.json()["task_id"]

    env = cli_env(tmp_path, TASKCAST_URL=url, TASKCAST_TOKEN=token)
    watched = cli("watch", ok_task, env=env)
    assert watched.returncode == 0, watched.stderr
    assert "succeeded" in watched.stderr
    watched = cli("watch", failing_task, env=env)
    assert watched.returncode == 1, watched.stderr
    assert "card declined" in watched.stderr

    frames = tail_until_terminal(f"task:{ok_task}", env, tmp_path / "tail.out")
    assert [f["seq"] for f in frames] == seqs

    assert up.interrupt() == 0, up.err_path.read_text()
    wait_for(lambda: not any(running(pid) for pid in children), 10, "children to exit")
    assert not ours(str(tmp_path)), "redis-server, uvicorn or celery left running"
    for log in (tmp_path / "data" / "logs").glob("*.log"):
        assert token not in log.read_text(errors="replace"), f"token leaked into {log.name}"
    assert token not in up.err_path.read_text()


def test_token_command_signs_with_the_local_secret(tmp_path: Path) -> None:
    """`taskcast token` prints a token signed with the data folder's secret, with its scopes."""
    env = cli_env(tmp_path)
    missing = cli("token", env=env)
    assert missing.returncode == 2
    assert "TASKCAST_JWT_SECRET" in missing.stderr

    secret_file = tmp_path / "data" / "jwt_secret"
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text("s" * 48 + "\n")
    made = cli("token", "--user", "bob", "--scope", "admin", "--scope", "topic:orders", env=env)
    assert made.returncode == 0, made.stderr
    principal = verify(made.stdout.strip(), "s" * 48)
    assert principal.user == "bob"
    assert principal.scopes == {"admin", "topic:orders"}

    env["TASKCAST_JWT_SECRET"] = "e" * 40
    made = cli("token", "--user", "carol", env=env)
    assert verify(made.stdout.strip(), "e" * 40).user == "carol"


def test_up_reports_a_port_in_use(tmp_path: Path) -> None:
    """`up` on a busy port exits 1 naming the port before it starts anything, so nothing is
    left running."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = cli_env(tmp_path, PORT=str(port))
        result = cli("up", env=env)
    assert result.returncode == 1, result.stderr
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (tmp_path / "data" / "logs").exists(), "up started something first"
    assert not ours(str(tmp_path)), "redis-server, uvicorn or celery left running"


@pytest.mark.timeout(90)
def test_up_uses_redis_url_when_given(tmp_path: Path, redis_url: str) -> None:
    """With REDIS_URL set, `up` starts no Redis of its own and its worker writes to that Redis."""
    proc = Up(tmp_path, REDIS_URL=redis_url)
    try:
        url, token = proc.wait_started()
        assert not any(b"redis-server" in command(pid) for pid in descendants(proc.proc.pid))
        reply = httpx.post(
            f"{url}/orders",
            json={"customer_id": "c1", "items": [{"sku": "A1", "qty": 1}]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 202, reply.text
        task_key = f"tc:t:{reply.json()['task_id']}"
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        wait_for(lambda: client.hget(task_key, "status") == b"succeeded", 30, "the order to finish")
        client.close()
        assert proc.interrupt() == 0, proc.err_path.read_text()
        assert not ours(str(tmp_path)), "uvicorn or celery left running"
    finally:
        proc.kill()


def event_types(printed: str) -> set[str]:
    """The event types a printed `taskcast schema` has an envelope for."""
    return set(json.loads(printed)["$defs"]["TaskcastEvent"]["discriminator"]["mapping"])


def test_schema_lists_the_builtin_types_and_an_apps_registered_ones(tmp_path: Path) -> None:
    """`taskcast schema` prints the core's types only, plus those of the modules named by
    `--import` or `TASKCAST_IMPORTS`; a module that cannot be imported is named."""
    core = event_types(cli("schema", env=cli_env(tmp_path)).stdout)
    assert "task.progress" in core
    assert "order.created" not in core
    demo = cli("schema", env=cli_env(tmp_path, TASKCAST_IMPORTS="taskcast.workers.demo_events"))
    assert {"order.created", "inventory.low_stock"} <= event_types(demo.stdout)
    app = cli("schema", "--import", "tests.adopter_events", env=cli_env(tmp_path))
    assert "invoice.generated" in event_types(app.stdout)
    missing = cli("schema", "-i", "no_such_module", env=cli_env(tmp_path))
    assert missing.returncode == 2
    assert "no_such_module" in missing.stderr
