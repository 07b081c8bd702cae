"""The examples, run as their users run them: from a wheel of the checkout installed into a
fresh virtualenv, each app in its own folder, with real Redis, Celery and (for one) RabbitMQ."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .processes import Process, free_port, wait_for
from .wsclient import WS, terminal

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PROTOCOLS = [
    "--http", "taskcast.api.wsprotocol:HttpProtocol",
    "--ws", "taskcast.api.wsprotocol:WebSocketProtocol",
]  # fmt: skip

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding a wheel of the checkout (and Flask, for the Flask example)."""
    where = tmp_path_factory.mktemp("examples")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(where / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (where / "dist").glob("taskcast-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    pip = [str(where / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(wheel), "flask>=3,<4"], check=True, capture_output=True)
    return where / "venv"


@pytest.fixture
def run(
    venv: Path, tmp_path: Path, log_dir: Path
) -> Iterator[Callable[[str, str, list[str], dict[str, str]], Process]]:
    """Start a command of the venv in a copy of an example's folder (so nothing of the checkout
    is importable: only what the wheel installed)."""
    started: list[Process] = []

    def start(example: str, name: str, args: list[str], env: dict[str, str]) -> Process:
        folder = tmp_path / example
        if not folder.exists():
            shutil.copytree(EXAMPLES / example, folder)
        full = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCAST_", "REDIS"))}
        full.update(env, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", PYTHONUNBUFFERED="1")
        proc = Process(name, [str(venv / "bin" / args[0]), *args[1:]], full, log_dir, folder)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def ready(url: str, proc: Process) -> Callable[[], bool]:
    def check() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-3000:]}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return check


async def follow(ws_url: str, token: str, task_id: str) -> WS:
    """Subscribe from the start and read the task to its end."""
    ws = await WS.open(ws_url, token)
    assert (await ws.recv())["type"] == "welcome"
    reply = await ws.subscribe(f"task:{task_id}", since=0)
    assert reply["type"] == "subscribed", reply
    await ws.recv_until(terminal, timeout=60)
    await ws.close()
    return ws


async def refused(ws_url: str, token: str, task_id: str) -> None:
    ws = await WS.open(ws_url, token)
    await ws.recv()
    await ws.send({"op": "subscribe", "channel": f"task:{task_id}", "since": 0})
    reply = await ws.recv_until(lambda f: f["type"] in ("subscribed", "error"))
    assert reply["type"] == "error"
    assert reply["code"] == "forbidden"
    await ws.close()


def test_the_wheel_brings_no_other_top_level_name(venv: Path, tmp_path: Path) -> None:
    """Installed from its wheel, taskcast adds `taskcast` and no `api`, `realtime`, `workers`."""
    probe = (
        "import importlib.util as u; print([n for n in ('api', 'realtime', 'workers', "
        "'taskcast') if u.find_spec(n)])"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.stdout.strip() == "['taskcast']", out.stderr


async def test_fastapi_app_with_its_own_celery_app_and_rs256_tokens(
    run: Callable[..., Process], redis_url: str, tmp_path: Path
) -> None:
    """A user of the shop starts a report and follows it under `/realtime/ws`: every progress
    step, the shop's own `report.ready` event and `task.succeeded`; another user is refused."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp_path / "shop.pem", tmp_path / "shop.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = {
        "REDIS_URL": redis_url,
        "BROKER_URL": redis_url,
        "SHOP_PRIVATE_KEY": str(private),
        "TASKCAST_JWT_ALGORITHMS": "RS256",
        "TASKCAST_JWT_PUBLIC_KEY": str(public),
    }
    port = free_port()
    run("fastapi_celery", "shop-worker", ["celery", "-A", "tasks", "worker", "-c", "1"], env)
    web = run(
        "fastapi_celery", "shop-web", ["uvicorn", "app:app", "--port", str(port), *PROTOCOLS], env
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(ready(f"{base}/realtime/readyz", web), 30, "the shop's app")
    async with httpx.AsyncClient(base_url=base) as http:
        alice = (await http.post("/login", json={"user": "alice"})).json()["token"]
        mallory = (await http.post("/login", json={"user": "mallory"})).json()["token"]
        sent = await http.post("/reports", headers={"Authorization": f"Bearer {alice}"})
        assert sent.status_code == 202, sent.text
    task_id = sent.json()["task_id"]
    ws_url = f"ws://127.0.0.1:{port}/realtime/ws"
    seen = await follow(ws_url, alice, task_id)
    types = [f["event"]["type"] for f in seen.events()]
    assert types[-1] == "task.succeeded"
    assert "report.ready" in types
    steps = [
        f["event"]["data"]["current"]
        for f in seen.events()
        if f["event"]["type"] == "task.progress"
    ]
    assert steps == sorted(set(steps))
    assert steps[-1] == 5
    await refused(ws_url, mallory, task_id)


async def test_flask_app_on_rabbitmq_with_taskcast_beside_it(
    run: Callable[..., Process], redis_url: str, vhost: str
) -> None:
    """A Flask app enqueues on a user's behalf through RabbitMQ; the user follows the task on
    taskcast's own web process to its end; another user is refused."""
    secret = "s" * 40
    env = {
        "REDIS_URL": redis_url,
        "BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "TASKCAST_JWT_SECRET": secret,
    }
    flask_port, taskcast_port = free_port(), free_port()
    run("flask_rabbitmq", "billing-worker", ["celery", "-A", "tasks", "worker", "-c", "1"], env)
    flask = run(
        "flask_rabbitmq",
        "billing-web",
        ["flask", "--app", "app", "run", "--port", str(flask_port)],
        env,
    )
    server = run(
        "flask_rabbitmq",
        "taskcast-web",
        [
            "uvicorn",
            "--factory",
            "taskcast.api.main:create_server",
            "--port",
            str(taskcast_port),
            *PROTOCOLS,
        ],
        env,
    )
    wait_for(
        ready(f"http://127.0.0.1:{taskcast_port}/readyz", server), 30, "taskcast's web process"
    )
    flask_url = f"http://127.0.0.1:{flask_port}"
    wait_for(lambda: flask.alive() and _answers(f"{flask_url}/login"), 30, "the Flask app")
    async with httpx.AsyncClient(base_url=flask_url) as http:
        bob = (await http.post("/login", json={"user": "bob"})).json()["token"]
        alice = (await http.post("/login", json={"user": "alice"})).json()["token"]
        sent = await http.post("/invoices", headers={"Authorization": f"Bearer {bob}"})
        assert sent.status_code == 202, sent.text
    task_id = sent.json()["task_id"]
    ws_url = f"ws://127.0.0.1:{taskcast_port}/ws"
    seen = await follow(ws_url, bob, task_id)
    types = [f["event"]["type"] for f in seen.events()]
    assert types[0] == "task.queued"
    assert "task.progress" in types
    assert types[-1] == "task.succeeded"
    await refused(ws_url, alice, task_id)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code in (200, 405)
    except httpx.HTTPError:
        return False
