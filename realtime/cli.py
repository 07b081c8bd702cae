"""`taskcast`: run the product (`up`), mint tokens, submit work and follow it from a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from . import embedded, registry
from .client import Client, Frame
from .errors import TaskcastError, Unauthorized
from .schema import json_schema as wire_schema
from .settings import get_worker_settings
from .tokens import issue

app = typer.Typer(
    help="taskcast: stream Celery job progress to the people waiting on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a traceback's locals could include a token
)
err = Console(stderr=True, soft_wrap=True)

DEMO_USER = "demo"
DEMO_SCOPES = ("topic:orders", "topic:inventory")  # what the dashboard's demo sign-in grants
DEMO_TTL = 24 * 3600
READY_TIMEOUT = 60.0
WEB_STOP_TIMEOUT, WORKER_STOP_TIMEOUT = 10.0, 20.0
TERMINAL = {"succeeded": 0, "failed": 1, "cancelled": 1}
EXIT_ERROR = 2

Url = Annotated[
    str,
    typer.Option(
        "--url", envvar="TASKCAST_URL", help="The web process (default http://127.0.0.1:$PORT)."
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TASKCAST_TOKEN",
        show_default=False,
        help="Access token; default: a `demo` token signed with the local secret.",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=embedded.DATA_DIR_ENV,
        show_default=False,
        help="The embedded default's data folder (default ./.taskcast).",
    ),
]


def default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def local_secret(data_dir: Path | None) -> str | None:
    """`TASKCAST_JWT_SECRET`, else the secret `taskcast up` keeps in its data folder."""
    secret = os.environ.get("TASKCAST_JWT_SECRET")
    if secret:
        return secret
    path = (data_dir or embedded.data_dir()) / embedded.SECRET_FILE
    return path.read_text().strip() if path.is_file() else None


def resolve_token(
    token: str | None, data_dir: Path | None = None, scopes: tuple[str, ...] = DEMO_SCOPES
) -> str:
    if token:
        return token
    secret = local_secret(data_dir)
    if secret is None:
        fail("no token: pass --token or TASKCAST_TOKEN (or run `taskcast up` here first)")
    return issue(secret, DEMO_USER, scopes, ttl=3600)


# --- taskcast up -------------------------------------------------------------------------


class Child:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("ab")
        # Its own group: a terminal Ctrl-C reaches only `taskcast up`, which stops the
        # children in order (web, worker, then Redis), each with its subprocesses.
        self.proc = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, process_group=0
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float) -> None:
        """SIGTERM to the group (a graceful shutdown), SIGKILL after `timeout`."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):  # stragglers, e.g. pool children
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    return False


@app.command()
def up(
    port: Annotated[int, typer.Option(envvar="PORT", help="HTTP port of the web process.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data_dir: DataDir = None,
) -> None:
    """Run taskcast here: a private Redis (unless REDIS_URL is set), the web app and a worker."""
    if not _port_free(host, port):
        fail(f"port {port} on {host} is in use; choose another with PORT or --port", 1)
    folder = (data_dir or embedded.data_dir()).resolve()
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    secret = os.environ.get("TASKCAST_JWT_SECRET") or embedded.jwt_secret(folder)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: the terminal closed
        signal.signal(sig, lambda *_: stop.set())

    redis_server: embedded.EmbeddedRedis | None = None
    children: list[Child] = []
    code = 0
    try:
        redis_url = os.environ.get("REDIS_URL", "").strip()
        if not redis_url:
            redis_server = embedded.EmbeddedRedis(folder)
            redis_url = redis_server.start()
            err.print(f"private Redis on {redis_url} (append-only file in {folder})")
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "TASKCAST_EMBEDDED": "1",
            "TASKCAST_JWT_SECRET": secret,
            "PYTHONUNBUFFERED": "1",
        }
        python = sys.executable
        web_args = [
            python, "-m", "uvicorn", "--factory", "taskcast.api.main:create_app",
            "--host", host, "--port", str(port),
            "--http", "taskcast.api.wsprotocol:HttpProtocol",
            "--ws", "taskcast.api.wsprotocol:WebSocketProtocol", "--ws-max-size", "65536",
            "--timeout-graceful-shutdown", "5",
        ]  # fmt: skip
        worker_args = [
            python,
            "-m",
            "celery",
            "-A",
            "taskcast.workers.app",
            "worker",
            "--loglevel",
            "INFO",
        ]
        children.append(Child("web", web_args, env, logs))
        children.append(Child("worker", worker_args, env, logs))
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a comparison
        url = f"http://{shown}:{port}"
        deadline = time.monotonic() + READY_TIMEOUT
        while not _ready(url):
            dead = [c for c in children if not c.alive()]
            if dead:
                fail(f"{dead[0].name} exited during start-up:\n{dead[0].tail()}", 1)
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                fail(f"{url}/readyz not ready after {READY_TIMEOUT:.0f}s; logs in {logs}", 1)
            stop.wait(0.1)
        token = issue(secret, DEMO_USER, DEMO_SCOPES, ttl=DEMO_TTL)
        typer.echo(f"taskcast is up: {url}  (dashboard: {url}/ , logs: {logs})")
        typer.echo(
            f"token for user {DEMO_USER!r}, scopes {' '.join(DEMO_SCOPES)}, valid 24 h "
            "(more scopes, e.g. admin: `taskcast token --user demo --scope admin`):"
        )
        typer.echo(token)
        typer.echo("press Ctrl-C to stop")
        while not stop.wait(0.5):
            dead = [c for c in children if not c.alive()]
            if dead:
                err.print(f"[red]{dead[0].name} exited[/red]:\n{dead[0].tail()}", highlight=False)
                code = 1
                break
    finally:
        err.print("stopping…")
        for child in children:
            child.stop(WEB_STOP_TIMEOUT if child.name == "web" else WORKER_STOP_TIMEOUT)
        if redis_server is not None:
            redis_server.stop()
    if code:
        raise typer.Exit(code)


# --- taskcast token ----------------------------------------------------------------------


@app.command()
def token(
    user: Annotated[str, typer.Option("--user", "-u", help="The token's subject.")] = DEMO_USER,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", "-s", help="A scope (repeatable): admin, topic:<name>, topic:*"),
    ] = None,
    ttl: Annotated[int, typer.Option(help="Seconds the token is valid.", min=1)] = DEMO_TTL,
    data_dir: DataDir = None,
) -> None:
    """Print an access token signed with TASKCAST_JWT_SECRET (or the local `up` secret)."""
    secret = local_secret(data_dir)
    if secret is None:
        fail("set TASKCAST_JWT_SECRET, or run `taskcast up` in this folder first")
    typer.echo(issue(secret, user, scope or (), ttl=ttl))


@app.command()
def schema(
    module: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            "-i",
            show_default=False,
            help="A module registering event types (repeatable); default: TASKCAST_IMPORTS.",
        ),
    ] = None,
) -> None:
    """Print the JSON Schema of every frame, op and event type (for generating client types):
    the built-in event types and those of the modules named."""
    if os.getcwd() not in sys.path:  # the app's modules, as `celery -A` and uvicorn find them
        sys.path.insert(0, os.getcwd())
    try:
        registry.load(module or get_worker_settings().import_modules)
    except ImportError as exc:
        fail(str(exc))
    typer.echo(json.dumps(wire_schema(), indent=2))


# --- HTTP commands -----------------------------------------------------------------------


def post(url: str, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST JSON; on failure print the server's error (never the token) and exit 1."""
    try:
        reply = httpx.post(
            f"{url.rstrip('/')}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url} ({type(exc).__name__}); is `taskcast up` running?", 1)
    if reply.status_code >= 300:
        try:
            problem = reply.json()["error"]
            detail = f"{problem['code']}: {problem['message']}"
        except (ValueError, KeyError, TypeError):
            detail = reply.text[:500]
        fail(f"{reply.status_code} {detail}", 1)
    result: dict[str, Any] = reply.json()
    return result


@app.command()
def revoke(
    user: Annotated[str, typer.Argument(help="The user whose tokens to revoke.")],
    url: Url = "",
    token: Token = None,
) -> None:
    """End USER's connections on every node; refuse their tokens issued until now (admin).

    Without --token, an admin token signed with the local secret is used.
    """
    admin = resolve_token(token, scopes=("admin",))
    reply = post(url or default_url(), admin, f"/users/{quote(user, safe='')}/revoke", {})
    typer.echo(f"revoked {reply['user_id']} at {reply['revoked_at']}")


def parse_item(text: str) -> dict[str, Any]:
    sku, sep, qty = text.rpartition(":")
    if not sep or not sku or not qty.isdigit():
        raise typer.BadParameter(f"{text!r} is not SKU:QTY (e.g. A1:2)")
    return {"sku": sku, "qty": int(qty)}


@app.command()
def order(
    customer: Annotated[str, typer.Option("--customer", "-c", help="Customer id.")],
    item: Annotated[list[str], typer.Option("--item", "-i", help="SKU:QTY (repeatable).")],
    url: Url = "",
    token: Token = None,
    watch_it: Annotated[bool, typer.Option("--watch", help="Then follow it to its end.")] = False,
) -> None:
    """Submit an order (POST /orders) and print its task id."""
    url = url or default_url()
    token = resolve_token(token)
    items = [parse_item(text) for text in item]
    reply = post(url, token, "/orders", {"customer_id": customer, "items": items})
    typer.echo(reply["task_id"])
    if watch_it:
        raise typer.Exit(run_async(follow(url, token, reply["task_id"])))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with columns sku, qty and optional location.")],
    url: Url = "",
    token: Token = None,
    watch_it: Annotated[bool, typer.Option("--watch", help="Then follow it to its end.")] = False,
) -> None:
    """Import stock rows from a CSV file (POST /inventory/imports) and print the task id."""
    url = url or default_url()
    token = resolve_token(token)
    rows: list[dict[str, Any]] = []
    try:
        with file.open(newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    entry: dict[str, Any] = {"sku": row["sku"].strip(), "qty": int(row["qty"])}
                except (KeyError, AttributeError, TypeError, ValueError):
                    fail(f"{file}:{number}: needs columns sku and qty (an integer)")
                if (row.get("location") or "").strip():
                    entry["location"] = row["location"].strip()
                rows.append(entry)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    if not rows:
        fail(f"{file} has no rows")
    reply = post(url, token, "/inventory/imports", {"rows": rows})
    typer.echo(reply["task_id"])
    if watch_it:
        raise typer.Exit(run_async(follow(url, token, reply["task_id"])))


# --- WebSocket commands ------------------------------------------------------------------


async def follow(url: str, token: str, task_id: str) -> int:
    """Show a task's progress until it ends: 0 if it succeeded, 1 if it failed or was cancelled."""
    console = Console(stderr=True, soft_wrap=True)
    async with Client(url, token) as client, client.subscribe(f"task:{task_id}") as sub:
        try:
            first = await sub.ready(timeout=3.0)
        except TimeoutError:
            console.print(f"waiting for {url} (is `taskcast up` running?)", highlight=False)
            first = await sub.ready()
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
        with Progress(*columns, console=console) as bar:
            row = bar.add_task(f"task {task_id}", total=None)

            def finish(status: str, result: Any, error: Any) -> int | None:
                if status not in TERMINAL:
                    return None
                if status == "succeeded":
                    total = bar.tasks[0].total or 1
                    bar.update(row, completed=total, total=total)
                    console.print(f"[green]succeeded[/green] {json.dumps(result)}", highlight=False)
                elif status == "failed":
                    console.print(f"[red]failed[/red] {json.dumps(error)}", highlight=False)
                else:
                    console.print("[yellow]cancelled[/yellow]")
                return TERMINAL[status]

            def show(state: Frame) -> int | None:
                """Redraw from a task state (`subscribed` frames carry one)."""
                status = str(state.get("status", ""))
                progress = state.get("progress") or {}
                bar.update(
                    row,
                    completed=progress.get("current") or 0,
                    total=progress.get("total") or None,
                    description=str(progress.get("message") or status),
                )
                return finish(status, state.get("result"), state.get("error"))

            done = show(first["state"]) if isinstance(first.get("state"), dict) else None
            if done is not None:
                return done
            async for frame in sub:
                if frame["type"] == "subscribed":  # the stream could not resume: reload
                    done = show(frame.get("state") or {})
                elif frame["event"].get("task_id") != task_id:
                    continue  # a task this one started (its workflow shares the channel)
                else:
                    kind, data = frame["event"]["type"], frame["event"].get("data") or {}
                    if kind == "task.progress":
                        bar.update(
                            row,
                            completed=data.get("current", 0),
                            total=data.get("total") or None,
                            description=str(data.get("message") or "running"),
                        )
                    elif kind in ("task.started", "task.retrying"):
                        bar.update(row, description=kind.removeprefix("task."))
                    status = kind.removeprefix("task.")
                    done = finish(status, data.get("result"), data.get("error"))
                if done is not None:
                    return done
    return EXIT_ERROR  # the stream ended without a terminal event (client closed)


def run_async(coro: Any) -> int:
    """Run a command's coroutine; turn the client's errors into messages and exit codes."""
    try:
        code: int = asyncio.run(coro)
    except KeyboardInterrupt:
        return 130
    except Unauthorized:
        fail("unauthorized: the token is missing, invalid or expired")
    except TaskcastError as exc:
        fail(f"{exc.code}: {exc.message}")
    return code


@app.command()
def watch(task_id: str, url: Url = "", token: Token = None) -> None:
    """Follow a task with a progress bar; exit 0 if it succeeds, 1 if it fails or is cancelled."""
    raise typer.Exit(run_async(follow(url or default_url(), resolve_token(token), task_id)))


async def _tail(url: str, token: str, channel: str, since: int | None) -> int:
    async with Client(url, token) as client, client.subscribe(channel, since=since) as sub:
        await sub.ready()
        async for frame in sub:
            sys.stdout.write(json.dumps(frame, separators=(",", ":")) + "\n")
            sys.stdout.flush()
    return 0


@app.command()
def tail(
    channel: Annotated[str, typer.Argument(help="task:<id>, user:<id> or topic:<name>")],
    since: Annotated[int | None, typer.Option(help="Replay from history after this seq.")] = None,
    url: Url = "",
    token: Token = None,
) -> None:
    """Print a channel's frames as JSON lines, across reconnects, until interrupted."""
    raise typer.Exit(run_async(_tail(url or default_url(), resolve_token(token), channel, since)))
