"""The browser load: real Chromium pages on one channel, each connecting as a web page does.

Run as `python browsers.py`; the first stdin line is the JSON config clients.py takes (system,
URL, one group of `n` connections on the shared channel, the first `sample` of them timed).
One headless Chromium opens `n` pages on the server's own origin (so its Origin check passes);
each page opens one WebSocket from its own JavaScript, which is how Chromium offers
permessage-deflate (`permessage-deflate; client_max_window_bits`) and compresses what it
sends, subscribes (taskcast's `/ws` frames, or the anchor's raw Socket.IO frames), and counts
events, duplicates and gaps by the emitters' counters. It prints `{"ready": …}` once every
page is subscribed, then obeys `report <expected> <timeout>` and `quit` as clients.py does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Page, async_playwright
from processes import SECRET, percentile

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--renderer-process-limit=4",  # pages of one origin share renderers: hundreds fit
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]
OPENING = 16  # pages opening at once

# One page's connection: resolves with the negotiated extensions once subscribed.
CONNECT = """
(a) => new Promise((ok, fail) => {
  const s = window.__load = {received: 0, dups: 0, gaps: 0, last: {}, seq: -1, lat: [],
                             first: 0, lastAt: 0, closed: null};
  const count = (data, now) => {
    if (!s.first) s.first = now;
    s.lastAt = now; s.received++;
    if (a.sample && data.t !== undefined) s.lat.push(now - data.t);
    const e = data.e || 0, n = data.n, prev = s.last[e];
    if (prev !== undefined && n <= prev) { s.dups++; return; }
    if (prev !== undefined && n > prev + 1) s.gaps += n - prev - 1;
    s.last[e] = n;
  };
  const ws = new WebSocket(a.url);
  ws.onclose = (e) => { s.closed = e.code; fail(new Error('closed ' + e.code)); };
  if (a.system === 'anchor') {
    ws.onmessage = (m) => {
      const now = Date.now() / 1000, t = m.data;
      if (t.startsWith('42')) { count(JSON.parse(t.slice(2))[1], now); }
      else if (t === '2') { ws.send('3'); }
      else if (t.startsWith('40')) { ok(ws.extensions); }
      else if (t.startsWith('0')) { ws.send('40'); }
    };
  } else {
    ws.onopen = () => ws.send(JSON.stringify({op: 'subscribe', channel: a.channel}));
    ws.onmessage = (m) => {
      const now = Date.now() / 1000, f = JSON.parse(m.data);
      if (f.type === 'event') {
        if (f.seq <= s.seq) { s.dups++; return; }
        s.seq = f.seq; count(f.event.data, now);
      } else if (f.type === 'subscribed') { s.seq = f.seq; ok(ws.extensions); }
      else if (f.type === 'error') { fail(new Error(JSON.stringify(f))); }
    };
  }
})
"""

# What a page saw since the last report; its counters start again.
TAKE = """
() => { const s = window.__load, out = {received: s.received, dups: s.dups, gaps: s.gaps,
        lat: s.lat, first: s.first, last: s.lastAt, closed: s.closed};
        s.received = s.dups = s.gaps = 0; s.lat = []; s.first = s.lastAt = 0; return out; }
"""


class Browsers:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.system: str = conf["system"]
        self.url: str = conf["url"]
        parts = urlsplit(self.url)
        self.origin = f"http://{parts.netloc}/"
        self.pages: list[Page] = []
        self.failed = 0
        self.errors: list[str] = []
        self.extensions = ""

    def _url(self, i: int) -> str:
        if self.system == "anchor":
            return f"{self.url}&room=topic"
        from taskcast.realtime.tokens import issue

        return f"{self.url}?token={issue(SECRET, f'b{i}', ['topic:*'], ttl=7200)}"

    async def open_all(self, browser: Any) -> None:
        group = self.conf["groups"][0]
        n, sample = int(group["n"]), int(group.get("sample", 0))
        context = await browser.new_context()
        gate = asyncio.Semaphore(OPENING)

        async def one(i: int) -> None:
            async with gate:
                page = await context.new_page()
                try:
                    await page.goto(self.origin, wait_until="commit")
                    args = {"system": self.system, "url": self._url(i), "sample": i < sample,
                            "channel": "topic:notifications"}  # fmt: skip
                    self.extensions = await asyncio.wait_for(page.evaluate(CONNECT, args), 60)
                    self.pages.append(page)
                except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    await page.close()

        await asyncio.gather(*(one(i) for i in range(n)))

    async def _take(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(page.evaluate(TAKE) for page in self.pages)))

    async def report(self, expected: int, timeout: float) -> dict[str, Any]:
        """Wait until `expected` events arrived (or nothing moved for 3 s), then summarise."""
        deadline = time.monotonic() + timeout
        seen, still, taken = -1, time.monotonic(), []
        totals: dict[str, Any] = {"received": 0, "dups": 0, "gaps": 0}
        lat: list[float] = []
        first, last = 0.0, 0.0
        while True:
            taken = await self._take()
            for t in taken:
                for key in totals:
                    totals[key] += t[key]
                lat += t["lat"]
                if t["first"]:
                    first = min(first, t["first"]) if first else t["first"]
                last = max(last, t["last"])
            got = totals["received"]
            if got >= expected or time.monotonic() > deadline:
                break
            if got != seen:
                seen, still = got, time.monotonic()
            elif time.monotonic() - still > 3:
                break
            await asyncio.sleep(0.25)
        lat.sort()
        window = last - first
        return {
            "connections": len(self.pages),
            "failed": self.failed,
            "extensions": self.extensions,
            "received": totals["received"],
            "expected": expected,
            "lost": max(0, expected - totals["received"]),
            "dups": totals["dups"],
            "gaps": totals["gaps"],
            "told": 0,
            "silent_loss": totals["gaps"],
            "close_codes": sorted({t["closed"] for t in taken if t["closed"]}),
            "frames_per_s": totals["received"] / window if window > 0 else 0.0,
            "lat_n": len(lat),
            "p50_ms": 1000 * percentile(lat, 0.5) if lat else None,
            "p99_ms": 1000 * percentile(lat, 0.99) if lat else None,
            "max_ms": 1000 * lat[-1] if lat else None,
        }


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    load = Browsers(json.loads(await reader.readline()))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        await load.open_all(browser)
        ready = {"ready": len(load.pages), "failed": load.failed, "retries": 0}
        print(json.dumps({**ready, "errors": load.errors}), flush=True)
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":
                break
            if line[0] == "report":
                result = await load.report(int(line[1]), float(line[2]))
                print(json.dumps(result), flush=True)
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
