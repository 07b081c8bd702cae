"""The dashboard in headless Chromium against a real embedded web node and a Celery worker."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    FilePayload,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from .processes import ROOT, RedisServer, Web, Worker, base_env

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright never downloads a browser here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
STEP_DELAY = "0.15"  # seconds per order step / import batch: slow enough to watch and cancel
WAIT_MS = 30_000
PASTE_ROWS = 200  # bigger imports are uploaded as a file, as a user would


class Stack:
    """One embedded web node (restartable on its port) and one worker for the module."""

    def __init__(self, redis_server: RedisServer, log_dir: Path) -> None:
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()
        self.env = base_env(redis_server.url, TASKCAST_EMBEDDED="1", TASKCAST_STEP_DELAY=STEP_DELAY)
        self.log_dir = log_dir
        self.restarts = 0
        self.web = Web(self.env, log_dir, "web")
        self.worker = Worker(self.env, log_dir, "worker")
        self.web.wait_ready()
        self.worker.wait_ready()

    def restart_web(self, page: Page) -> None:
        """Stop the web node, see the page notice, and start a new one on the same port."""
        self.web.stop()
        expect(page.locator("#connection")).to_have_attribute(
            "data-connection-state", "reconnecting", timeout=WAIT_MS
        )
        self.restarts += 1
        self.web = Web(self.env, self.log_dir, f"web-restart{self.restarts}", self.web.port)
        self.web.wait_ready()

    def close(self) -> None:
        self.web.stop()
        self.worker.stop()


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("browser-logs")
    running = Stack(redis_server, log_dir)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = launch(pw)
        yield chromium
        chromium.close()


def launch(pw: Playwright) -> Browser:
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context signed in as a new demo user; logs on failure."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    console: list[str] = []
    tab.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    tab.goto(stack.web.url + "/")
    sign_in(tab, f"demo-{uuid.uuid4().hex[:8]}")
    yield tab
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n".join(console[-50:]))
        for log in sorted(stack.log_dir.glob("*.log")):
            print(f"\n===== {log.name} =====\n{log.read_text(errors='replace')[-3000:]}")
    context.close()


def sign_in(tab: Page, user: str) -> None:
    tab.locator("#demo-user").fill(user)
    tab.locator("#demo-signin button[type=submit]").click()
    expect(tab.locator("#whoami")).to_have_text(user)
    expect(tab.locator("#connection")).to_have_attribute("data-connection-state", "open")


def screenshot(tab: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def submit_order(tab: Page, customer: str, items: str = "A1:2, B7:1") -> str:
    """Submit the order form; returns the new task's id once its row is on the page."""
    before = tab.locator("#tasks li.task").count()
    tab.locator("#order-customer").fill(customer)
    tab.locator("#order-items").fill(items)
    tab.locator("#order-form button[type=submit]").click()
    expect(tab.locator("#tasks li.task")).to_have_count(before + 1)
    task_id = tab.locator("#tasks li.task").first.get_attribute("data-task-id")
    assert task_id
    return task_id


def submit_import(tab: Page, rows: int) -> str:
    csv = "sku,qty,location\n" + "\n".join(f"S{i},{i % 40},main" for i in range(rows))
    if rows > PASTE_ROWS:  # a big import comes as a file: typing 40 KB takes chromium ~30 s here
        upload: FilePayload = {"name": "import.csv", "mimeType": "text/csv", "buffer": csv.encode()}
        tab.locator("#import-file").set_input_files(upload)
    else:
        tab.locator("#import-csv").fill(csv)
    tab.locator("#import-form button[type=submit]").click()
    row = tab.locator("#tasks li.task").first
    expect(row).to_have_attribute("data-task-id", re.compile(r"^[0-9a-f]{32}$"))
    task_id = row.get_attribute("data-task-id")
    assert task_id
    return task_id


def task_row(tab: Page, task_id: str):  # type: ignore[no-untyped-def]
    return tab.locator(f'li.task[data-task-id="{task_id}"]')


def seen(tab: Page, task_id: str) -> list[int]:
    seqs: list[int] = tab.evaluate(f"window.taskcastDebug.seen['task:{task_id}']")
    return seqs


@pytest.mark.timeout(60)
def test_order_bar_reaches_100_and_succeeds(page: Page, browser: Browser, stack: Stack) -> None:
    """A submitted order's bar fills to 100%, its badge says succeeded, and the feed shows it."""
    task_id = submit_order(page, "c1")
    row = task_row(page, task_id)
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row.locator("[data-role=percent]")).to_have_text("100%")
    expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator("[data-role=result]")).to_contain_text("status: shipped")
    expect(row.locator("[data-action=cancel]")).to_be_hidden()
    expect(page.locator("#feed-orders li").first).to_be_visible()
    expect(page.locator("#feed-orders")).to_contain_text("shipped")
    seqs = seen(page, task_id)
    assert seqs == list(range(1, len(seqs) + 1))
    screenshot(page, "browser-order-succeeded")
    # The same page on a phone: one column, nothing cut off sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone ({width}px)"
    screenshot(page, "browser-order-phone")


@pytest.mark.timeout(60)
def test_failing_order_shows_its_error(page: Page) -> None:
    """An order whose card is declined ends failed, with the reason under its bar."""
    task_id = submit_order(page, "fail-x")
    row = task_row(page, task_id)
    expect(row).to_have_attribute("data-status", "failed")
    expect(row.locator("[data-role=error]")).to_have_text("card declined for customer fail-x")
    expect(row.locator("[data-role=status]")).to_have_text("failed")
    screenshot(page, "browser-order-failed")


@pytest.mark.timeout(60)
def test_cancel_stops_a_running_import(page: Page) -> None:
    """Cancel on a running import ends it as cancelled before it completes."""
    task_id = submit_import(page, rows=3000)  # 60 batches at 0.15 s: ~9 s of work
    row = task_row(page, task_id)
    expect(row.locator("[data-role=percent]")).not_to_have_text("0%")
    row.locator("[data-action=cancel]").click()
    expect(row).to_have_attribute("data-status", "cancelled")
    expect(row.locator("[data-role=message]")).to_contain_text("cancelled")
    percent = int(row.locator("[data-role=percent]").inner_text().rstrip("%"))
    assert 0 < percent < 100
    expect(row.locator("[data-role=result]")).to_be_hidden()
    screenshot(page, "browser-import-cancelled")


@pytest.mark.timeout(90)
def test_web_restart_mid_import_loses_no_step(page: Page, stack: Stack) -> None:
    """Restarting the web node mid-import: reconnecting, then open, and every seq arrives once."""
    task_id = submit_import(page, rows=2000)  # 40 batches at 0.15 s: ~6 s of work
    row = task_row(page, task_id)
    expect(row.locator("[data-role=percent]")).not_to_have_text("0%")
    stack.restart_web(page)
    expect(page.locator("#connection")).to_have_attribute("data-connection-state", "open")
    # the import's ~6 s of work outlasts an assertion's default 5 s wait
    expect(row).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(row.locator("[data-role=percent]")).to_have_text("100%")
    expect(page.locator(".toast").first).to_contain_text("Inventory import finished")
    states: list[str] = page.evaluate("window.taskcastDebug.states")
    after = states[states.index("open") :]
    assert "reconnecting" in after
    assert after[-1] == "open"
    seqs = seen(page, task_id)
    assert seqs == list(range(1, len(seqs) + 1)), "a step was missed or repeated"
    assert page.evaluate("window.taskcastDebug.resets") == []
    screenshot(page, "browser-restart-resumed")


FAKE_SOCKET = """
async () => {
  const { Taskcast } = await import("/static/taskcast.js");
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url; this.readyState = 1; this.sent = []; sockets.push(this);
      setTimeout(() => this.deliver({ type: "welcome", user: "u" }), 0);
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code) { this.readyState = 3; setTimeout(() => this.onclose({ code }), 0); }
    deliver(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
  }
  const until = async (check) => {
    const deadline = Date.now() + 5000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error("timed out: " + check);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const states = [], got = [], resets = [];
  const options = { token: "t", WebSocket: FakeSocket, baseDelay: 10, maxDelay: 40 };
  const tc = new Taskcast("/ws", options);
  tc.addEventListener("state", () => states.push(tc.state));
  tc.addEventListener("reset", (ev) => resets.push(ev.detail.seq));
  tc.subscribe("user:u", (event, frame) => got.push(frame.seq));
  tc.connect();
  await until(() => sockets.length === 1 && sockets[0].sent.length === 1);
  const first = sockets[0].sent[0];
  const event = (seq) => ({
    type: "event", channel: "user:u", seq, event: { type: "notification" } });
  sockets[0].deliver({
    type: "subscribed", channel: "user:u", seq: 2, epoch: "E1", ref: first.ref });
  for (const seq of [3, 4, 4, 3, 5]) sockets[0].deliver(event(seq));
  sockets[0].close(1012);  // server restarting
  await until(() => sockets.length === 2 && sockets[1].sent.length === 1);
  const resumed = sockets[1].sent[0];
  sockets[1].deliver({ type: "subscribed", channel: "user:u", seq: 9, epoch: "E2",
                       recovered: false, ref: resumed.ref });
  for (const seq of [5, 9, 10]) sockets[1].deliver(event(seq));
  sockets[1].close(4401);
  await until(() => tc.state === "signed-out");
  await new Promise((r) => setTimeout(r, 300));  // well past the 40 ms backoff cap
  return { first, resumed, got, resets, states, sockets: sockets.length,
           url: sockets[0].url };
}
"""


@pytest.mark.timeout(30)
def test_client_resumes_dedupes_and_stops_when_signed_out(page: Page) -> None:
    """taskcast.js resumes with since+epoch, drops repeated seqs, and stops after 4401."""
    out = page.evaluate(FAKE_SOCKET)
    assert out["url"].endswith("/ws?token=t")
    assert "since" not in out["first"]
    assert out["resumed"]["since"] == 5
    assert out["resumed"]["epoch"] == "E1"
    assert out["got"] == [3, 4, 5, 10]  # 9 and below belong to before the reset
    assert out["resets"] == [9]
    assert out["states"] == ["connecting", "open", "reconnecting", "open", "signed-out"]
    assert out["sockets"] == 2


@pytest.mark.timeout(30)
def test_client_with_a_bad_token_is_signed_out(page: Page, stack: Stack) -> None:
    """Against the real server, a bad token ends in "signed-out" after close 4401."""
    state = page.evaluate(
        """async () => {
          const { Taskcast } = await import("/static/taskcast.js");
          const tc = new Taskcast("/ws", { token: "not-a-token" });
          const done = new Promise((resolve) => tc.addEventListener("state", () => {
            if (tc.state === "signed-out") resolve(tc.state);
          }));
          tc.connect();
          return await done;
        }"""
    )
    assert state == "signed-out"


@pytest.mark.timeout(60)
def test_embedded_dashboard_logs_no_console_error(browser: Browser, stack: Stack) -> None:
    """In the embedded default the dashboard offers demo sign-in, runs an order to the end, and
    the browser logs no error and gets no 4xx/5xx (the favicon included)."""
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
    tab.goto(stack.web.url + "/")
    expect(tab.locator("#token-signin")).to_be_hidden()
    sign_in(tab, f"demo-{uuid.uuid4().hex[:8]}")
    task_id = submit_order(tab, "c1")
    expect(task_row(tab, task_id)).to_have_attribute("data-status", "succeeded")
    assert tab.evaluate("document.querySelector('link[rel=icon]').href").endswith("favicon.svg")
    context.close()
    assert errors == []
