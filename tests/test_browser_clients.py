"""The browser package in Chromium against a real deployment (not embedded): the drop-in
elements on a page of another site, the React example, and the dashboard's console.

The pages' snippets come from docs/browser.md, so what the docs show is what runs here.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from taskcast.realtime import Client
from taskcast.realtime.events import TERMINAL_TYPES
from taskcast.realtime.tokens import issue

from .processes import ROOT, SECRET, RedisServer, Web, Worker, base_env, free_port
from .test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

DOCS = ROOT / "docs" / "browser.md"
CLIENT = ROOT / "clients" / "js"
IMPORT_ROWS = 3000  # 60 batches at STEP_DELAY: long enough to restart a node and Redis under it
STEP_DELAY = "0.2"
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def snippet(name: str) -> str:
    """The fenced block after `<!-- snippet: name -->` in docs/browser.md."""
    found = re.search(
        rf"<!-- snippet: {re.escape(name)} -->\s*```\w*\n(.*?)```", DOCS.read_text(), re.DOTALL
    )
    assert found, f"docs/browser.md has no snippet {name!r}"
    return found.group(1)


class Deployment:
    """A web node and a worker on a Redis with an append-only file, all restartable."""

    def __init__(self, app_origin: str, log_dir: Path) -> None:
        self.redis = RedisServer(appendonly=True)
        self.redis.start()
        port = free_port()
        # the embedding site, and the dashboard's own origin (a list replaces same-origin)
        origins = f"{app_origin},http://127.0.0.1:{port}"
        self.env = base_env(
            self.redis.url, TASKCAST_STEP_DELAY=STEP_DELAY, TASKCAST_ALLOWED_ORIGINS=origins
        )
        self.log_dir = log_dir
        self.restarts = 0
        self.web = Web(self.env, log_dir, "web", port)
        self.worker = Worker(self.env, log_dir, "worker")
        self.web.wait_ready()
        self.worker.wait_ready()

    def restart_web(self) -> None:
        self.web.stop()
        self.restarts += 1
        self.web = Web(self.env, self.log_dir, f"web-restart{self.restarts}", self.web.port)
        self.web.wait_ready()

    def restart_redis(self) -> None:
        """Stop Redis gracefully (its append-only file keeps every event) and start it again."""
        self.redis.restart(graceful=True)

    def submit_import(self, token: str, rows: int = IMPORT_ROWS) -> str:
        body = {"rows": [{"sku": f"S{i}", "qty": i % 40, "location": "main"} for i in range(rows)]}
        reply = httpx.post(
            f"{self.web.url}/inventory/imports",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 202, reply.text
        task_id: str = reply.json()["task_id"]
        return task_id

    def submit_order(self, token: str, customer: str = "c1") -> str:
        reply = httpx.post(
            f"{self.web.url}/orders",
            json={"customer_id": customer, "items": [{"sku": "A1", "qty": 1}]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 202, reply.text
        task_id: str = reply.json()["task_id"]
        return task_id

    def close(self) -> None:
        self.web.stop()
        self.worker.stop()
        self.redis.close()


@pytest.fixture(scope="module")
def site() -> Iterator[AppSite]:
    running = AppSite()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def deployment(site: AppSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    running = Deployment(site.origin, tmp_path_factory.mktemp("browser-clients-logs"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Console:
    """Everything a page logged as an error, plus uncaught exceptions and failed loads."""

    def __init__(self, tab: Page) -> None:
        self.errors: list[str] = []
        self.lines: list[str] = []
        tab.on("console", self._console)
        tab.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        tab.on("requestfailed", lambda req: self.errors.append(f"requestfailed: {req.url}"))

    def _console(self, msg: ConsoleMessage) -> None:
        self.lines.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")


@pytest.fixture
def tab(
    browser: Browser, deployment: Deployment, request: pytest.FixtureRequest
) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    console = Console(page)
    yield page, console
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n".join(console.lines[-50:]))
        for log in sorted(deployment.log_dir.glob("*.log")):
            print(f"\n===== {log.name} =====\n{log.read_text(errors='replace')[-3000:]}")
    context.close()


class AppSite:
    """The site embedding taskcast (another origin, as a Django app would be): an HTTP server
    on loopback serving the pages a test gives it, and a blank favicon as any real site has."""

    def __init__(self) -> None:
        pages: dict[str, bytes] = {}
        self.pages = pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                body = pages.get(path)
                kind = TYPES.get(Path(path).suffix, "text/html; charset=utf-8")
                if body is None and path == "/favicon.ico":
                    body, kind = b"", "image/x-icon"
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, path: str, html: str) -> str:
        self.pages[path] = html.encode()
        return self.origin + path

    def serve_dir(self, prefix: str, directory: Path) -> str:
        """Serve a built app's files under `prefix`; returns its index page's URL."""
        for file in directory.rglob("*"):
            if file.is_file():
                self.pages[f"{prefix}/{file.relative_to(directory).as_posix()}"] = file.read_bytes()
        return f"{self.origin}{prefix}/index.html"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def page_html(body: str) -> str:
    head = '<meta charset="utf-8"><title>shop</title>'
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def template(text: str, deployment: Deployment, **values: str) -> str:
    """Fill a docs snippet as a server-rendered page would: `{{ name }}` and the server's URL."""
    text = text.replace("https://taskcast.example.com", deployment.web.url)
    for key, value in values.items():
        text = text.replace("{{ " + key + " }}", value)
    assert "{{" not in text, text
    return text


def user_token(user: str | None = None) -> tuple[str, str]:
    name = user or f"shopper-{uuid.uuid4().hex[:8]}"
    return name, issue(SECRET, name, (), ttl=3600)


@pytest.mark.timeout(120)
def test_progress_element_follows_a_task_through_node_and_redis_restarts(
    tab: tuple[Page, Console], deployment: Deployment, site: AppSite
) -> None:
    """The drop-in element on another site's page shows every step once, across a web node
    restart and a Redis restart, and ends on the final state, with no console error."""
    page, console = tab
    _, token = user_token()
    task_id = deployment.submit_import(token)
    html = template(snippet("progress-element"), deployment, task_id=task_id, token=token)
    page.goto(site.serve("/orders/1", page_html(html)))
    element = page.locator("taskcast-progress")
    expect(element).to_have_attribute("connection", "open")
    expect(element).to_have_attribute("percent", re.compile(r"^[1-9]"))

    deployment.web.stop()
    expect(element).to_have_attribute("connection", "reconnecting")
    deployment.restart_web()
    expect(element).to_have_attribute("connection", "open", timeout=WAIT_MS)
    before = int(element.get_attribute("percent") or 0)
    deployment.restart_redis()
    expect(element).not_to_have_attribute("percent", str(before), timeout=WAIT_MS)

    expect(element).to_have_attribute("status", "succeeded", timeout=WAIT_MS)
    expect(element).to_have_attribute("percent", "100")
    expect(element.locator("[part=result]")).to_contain_text(f"rows: {IMPORT_ROWS}")
    expect(element.locator("[part=bar]")).to_have_attribute("aria-valuenow", "100")
    seqs: list[int] = element.evaluate("el => el.seqs")
    assert seqs == list(range(1, len(seqs) + 1)), "a step was missed or shown twice"
    assert element.get_attribute("history-lost") is None
    # the CSS custom property from the snippet reaches the bar inside the shadow root
    color = element.locator("[part=fill]").evaluate("el => getComputedStyle(el).backgroundColor")
    assert color == "rgb(22, 163, 74)"  # succeeded: the success colour, not the running one
    screenshot(page, "element-progress-succeeded")
    # Chromium itself logs each refused connection while the node is down; nothing else
    outage = "failed: Error in connection establishment: net::ERR_CONNECTION_REFUSED"
    assert [e for e in console.errors if outage not in e] == []


@pytest.mark.timeout(60)
def test_tasks_element_lists_each_new_task_live(
    tab: tuple[Page, Console], deployment: Deployment, site: AppSite
) -> None:
    """`<taskcast-tasks>` adds a live row for each task the user starts, each ending in its
    state."""
    page, console = tab
    _, token = user_token()
    html = template(snippet("tasks-element"), deployment, token=token)
    page.goto(site.serve("/account", page_html(html)))
    rows = page.locator("taskcast-tasks taskcast-progress")
    expect(page.locator("taskcast-tasks [part=empty]")).to_be_visible()
    # `ready`: its user channel is subscribed, so every task started from now on is listed
    expect(page.locator("taskcast-tasks")).to_have_attribute("ready", "")
    expect(rows).to_have_count(0)
    good = deployment.submit_order(token, "c1")
    bad = deployment.submit_order(token, "fail-card")
    expect(rows).to_have_count(2)
    expect(page.locator(f'taskcast-progress[task="{good}"]')).to_have_attribute(
        "status", "succeeded", timeout=WAIT_MS
    )
    failed = page.locator(f'taskcast-progress[task="{bad}"]')
    expect(failed).to_have_attribute("status", "failed", timeout=WAIT_MS)
    expect(failed.locator("[part=error]")).to_have_text("card declined for customer fail-card")
    expect(rows.first).to_have_attribute("task", bad)  # newest first
    screenshot(page, "element-tasks")
    assert console.errors == []


@pytest.mark.timeout(60)
def test_dashboard_outside_the_embedded_default_logs_no_console_error(
    tab: tuple[Page, Console], deployment: Deployment
) -> None:
    """Deployed without demo sign-in, the dashboard asks for a token without probing for one,
    signs in with it and goes live, and the browser logs no error (no 404, favicon included)."""
    page, console = tab
    user, token = user_token()
    responses: list[str] = []
    page.on("response", lambda r: responses.append(f"{r.status} {r.url}"))
    page.goto(deployment.web.url + "/")
    expect(page.locator("#token-signin")).to_be_visible()
    expect(page.locator("#demo-signin")).to_be_hidden()
    page.locator("#token-input").fill(token)
    page.locator("#token-signin button[type=submit]").click()
    expect(page.locator("#whoami")).to_have_text(user)
    expect(page.locator("#connection")).to_have_attribute("data-connection-state", "open")
    assert not [r for r in responses if "/auth/demo" in r]
    assert not [r for r in responses if r.startswith(("4", "5"))], responses
    assert console.errors == []


@pytest.fixture(scope="module")
def react_example() -> Path:
    """The React example, built with Vite from the package's source."""
    subprocess.run(["npm", "run", "--silent", "build:example"], cwd=CLIENT, check=True, timeout=120)
    return CLIENT / "examples" / "react" / "dist"


def task_history(url: str, token: str, task_id: str) -> list[dict[str, Any]]:
    """Every event frame of the task's channel, from the server's history."""

    async def read() -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        async with (
            Client(url, token) as client,
            client.subscribe(f"task:{task_id}", since=0) as sub,
        ):
            async for frame in sub:
                frames.append(frame)
                if frame["event"]["type"] in TERMINAL_TYPES:
                    return frames
        return frames

    # Playwright's sync API holds this thread's event loop: read on a thread of its own
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(read(), 30)).result()


@pytest.mark.timeout(120)
def test_react_example_follows_a_task_through_node_and_redis_restarts(
    tab: tuple[Page, Console], deployment: Deployment, site: AppSite, react_example: Path
) -> None:
    """The React example (Vite build) shows the connection, each step of a task exactly once
    across a web node restart and a Redis restart, the final result, and the app's own toast."""
    page, console = tab
    _, token = user_token()
    task_id = deployment.submit_import(token)
    index = site.serve_dir("/react", react_example)
    page.goto(
        f"{index}?{urlencode({'server': deployment.web.url, 'token': token, 'task': task_id})}"
    )
    badge = page.locator(".connection")
    card = page.locator("section.task")
    expect(badge).to_have_attribute("data-state", "open")
    expect(page.locator("ol.steps li").first).to_be_attached()

    deployment.web.stop()
    expect(badge).to_have_attribute("data-state", "reconnecting")
    deployment.restart_web()
    expect(badge).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    before = page.locator("ol.steps li").count()
    deployment.restart_redis()
    expect(page.locator("ol.steps li")).not_to_have_count(before, timeout=WAIT_MS)

    expect(card).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(card.locator(".percent")).to_have_text("100%")
    expect(card.locator(".result")).to_contain_text(f'"rows":{IMPORT_ROWS}')
    expect(card.locator(".lost")).to_have_count(0)
    expect(page.locator(".toast")).to_contain_text("Inventory import finished")
    shown = [
        int(s)
        for s in page.locator("ol.steps li").evaluate_all("els => els.map(e => e.dataset.seq)")
    ]
    steps = page.locator("ol.steps li").all_inner_texts()
    history = task_history(deployment.web.url, token, task_id)
    progress = [f for f in history if f["event"]["type"] == "task.progress"]
    assert shown == [f["seq"] for f in progress], "a step was missed, repeated or out of order"
    assert steps == [f["event"]["data"]["message"] or "" for f in progress]
    screenshot(page, "react-example-succeeded")
    outage = "failed: Error in connection establishment: net::ERR_CONNECTION_REFUSED"
    assert [e for e in console.errors if outage not in e] == []


def example_region(name: str) -> str:
    """The lines between `// snippet: name` and `// end snippet` in the React example."""
    text = (CLIENT / "examples" / "react" / "main.tsx").read_text()
    found = re.search(rf"// snippet: {re.escape(name)}\n(.*?)// end snippet", text, re.DOTALL)
    assert found, f"the React example has no snippet {name!r}"
    return found.group(1)


@pytest.mark.timeout(30)
def test_docs_react_snippets_are_the_example_that_runs() -> None:
    """The React code docs/browser.md shows is the example app's code, which the e2e runs."""
    for name in ("react-task", "react-toasts"):
        assert snippet(name) == example_region(name)


@pytest.mark.timeout(60)
def test_docs_package_snippet_follows_a_task(
    tab: tuple[Page, Console], deployment: Deployment
) -> None:
    """The package snippet of docs/browser.md, run as written on a page of the taskcast
    server, shows the connection, follows an order to its end and feeds the orders topic."""
    page, console = tab
    token = issue(SECRET, f"buyer-{uuid.uuid4().hex[:8]}", ("topic:orders",), ttl=3600)
    page.goto(deployment.web.url + "/")
    # a module's static imports, as dynamic ones, so the snippet runs inside page.evaluate
    code = re.sub(
        r'^import \{([^}]*)\} from "([^"]+)";.*$',
        r'const {\1} = await import("\2");',
        snippet("package"),
        flags=re.MULTILINE,
    )
    page.evaluate(
        """async ([token, code]) => {
          const seen = (window.snippetSeen = { states: [], tasks: [], feed: [] });
          const helpers = {
            getToken: () => token,
            showConnection: (state) => seen.states.push(state),
            render: (task) => seen.tasks.push(task),
            addToFeed: (event) => seen.feed.push(event.type),
          };
          window.snippetRun = (taskId) =>
            new Function(...Object.keys(helpers), "taskId", `return (async () => { ${code} })()`)(
              ...Object.values(helpers), taskId);
        }""",
        [token, code],
    )
    task_id = deployment.submit_order(token)
    page.evaluate("taskId => window.snippetRun(taskId)", task_id)
    page.wait_for_function("window.snippetSeen.tasks.at(-1)?.status === 'succeeded'")
    seen: dict[str, Any] = page.evaluate("window.snippetSeen")
    assert seen["states"][:2] == ["connecting", "open"]
    last = seen["tasks"][-1]
    assert last["percent"] == 100
    assert last["result"]["status"] == "shipped"
    assert last["historyLost"] is False
    assert "order.created" in seen["feed"]
    assert console.errors == []
