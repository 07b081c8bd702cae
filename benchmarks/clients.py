"""The load client: many WebSocket connections in one asyncio process, for either system.

Run as `python clients.py`; the first stdin line is a JSON config naming the system, the URL,
whether to offer permessage-deflate (websockets offers it as Chromium does:
`permessage-deflate; client_max_window_bits`, and compresses what it sends), and groups of
connections (`key` "topic" = the one shared channel, "each" = channel `<prefix><i>` per
connection). It prints `{"ready": …}` once every
connection is subscribed, then obeys `report <expected> <timeout> [raw]` (wait for the
measured connections to receive `expected` events in all, print a JSON result, reset the
counters) and `quit`. With `churn` (`{"rate": r, "stay": s, "key": k}`) it also opens r
connections a second from then on, each subscribing to channel k (default: the shared one;
"topic:<name>" another), reading for s seconds and closing; `visits` prints what they saw
so far, `report` stops them and adds what they saw. taskcast speaks the /ws contract; the
anchor raw Engine.IO v4 / Socket.IO v5 frames (far cheaper than python-socketio's
AsyncClient, so the client is not the bottleneck).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from processes import SECRET, percentile, raise_fd_limit
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

HANDSHAKES = 100  # connections opened concurrently


@dataclass(slots=True)
class Conn:
    """Counters of one measured connection."""

    key: str
    sample: bool
    received: int = 0
    dups: int = 0
    gaps: int = 0
    told: bool = False
    close_code: int | None = None
    last: dict[int, int] = field(default_factory=dict)  # emitter id -> last n (or seq for -1)


class Ponger(asyncio.Protocol):
    """An idle connection once subscribed, below websockets: it answers each ping with its
    pong and drops anything else, for a fraction of websockets' cost per frame, so that on
    this shared machine 10,000 idle connections' keep-alive is the server's work, not the
    load client's (the server's pings and what it does with pongs are unchanged)."""

    MASK = b"\x00\x00\x00\x00"  # a client must mask its frames; a zero mask keeps the bytes

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 2:
            size, head = buffer[1] & 0x7F, 2  # a server's frames are never masked
            if size >= 126:
                head = 4 if size == 126 else 10
                if len(buffer) < head:
                    return
                size = int.from_bytes(buffer[2:head], "big")
            if len(buffer) < head + size:
                return
            if buffer[0] & 0x0F == 0x9:  # a ping: the pong echoes its payload
                pong = bytes((0x8A, 0x80 | size)) + self.MASK + buffer[head : head + size]
                self.transport.write(pong)
            del buffer[: head + size]

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class Load:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.system: str = conf["system"]
        self.url: str = conf["url"]
        self.compression = "deflate" if conf.get("deflate") else None
        self.conns: list[Conn] = []
        self.sockets: list[ClientConnection] = []
        self.latencies: list[float] = []
        self.first = self.last = 0.0
        self.failed = 0
        self.retries = 0
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.churn: asyncio.Task[None] | None = None
        self.visits: set[asyncio.Task[None]] = set()
        self.visited = self.visit_failed = self.visit_frames = 0

    async def open_all(self) -> None:
        gate = asyncio.Semaphore(HANDSHAKES)
        jobs = []
        for group in self.conf["groups"]:
            for i in range(int(group["n"])):
                index = int(group.get("offset", 0)) + i
                key = "topic" if group["key"] == "topic" else f"{group['prefix']}{index}"
                user = f"{group.get('prefix', 't')}{index}"
                conn = Conn(key, sample=i < int(group.get("sample", 0)))
                jobs.append(self._open(gate, conn, user, bool(group.get("measure", True))))
        await asyncio.gather(*jobs)

    async def _open(self, gate: asyncio.Semaphore, conn: Conn, user: str, measure: bool) -> None:
        async with gate:
            try:
                ws = await asyncio.wait_for(self._handshake(conn, user), 60)
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                return
        self.sockets.append(ws)
        if measure:
            self.conns.append(conn)
            reader = self._read_anchor if self.system == "anchor" else self._read_taskcast
            self.tasks.add(asyncio.create_task(reader(ws, conn)))
        elif self.system == "anchor":  # Engine.IO's heartbeat is a text frame: websockets
            self.tasks.add(asyncio.create_task(self._idle(ws)))
        else:  # subscribed and idle: from here on only pings arrive, answered below websockets
            ws.transport.set_protocol(Ponger(ws.transport))

    async def _handshake(self, conn: Conn, user: str) -> ClientConnection:
        if self.system in ("taskcast", "floor", "wire"):  # the floors speak the same /ws frames
            from taskcast.realtime.tokens import issue

            token = issue(SECRET, user, ["topic:*"], ttl=7200)
            ws = await connect(
                f"{self.url}?token={token}", compression=self.compression,
                ping_interval=None, max_size=2**20, open_timeout=60,
            )  # fmt: skip
            if conn.key == "topic":
                channel = "topic:notifications"
            elif conn.key.startswith("topic:"):
                channel = conn.key
            else:
                channel = f"user:{conn.key}"
            subscribe = orjson.dumps({"op": "subscribe", "channel": channel}).decode()
            await ws.send(subscribe)
            tries = 0
            while True:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "subscribed":
                    conn.last[-1] = int(frame["seq"])
                    return ws
                if frame["type"] == "error" and frame.get("code") == "unavailable" and tries < 10:
                    # What a real client does: retry a moment later (counted and reported).
                    tries += 1
                    self.retries += 1
                    await asyncio.sleep(0.5)
                    await ws.send(subscribe)
                elif frame["type"] == "error":
                    raise RuntimeError(f"subscribe refused: {frame}")
        ws = await connect(
            f"{self.url}&room={conn.key}", compression=self.compression,
            ping_interval=None, max_size=2**20, open_timeout=60,
        )  # fmt: skip
        opened = await ws.recv()
        if not str(opened).startswith("0"):
            raise RuntimeError(f"unexpected Engine.IO open packet {opened!r}")
        await ws.send("40")
        while not str(await ws.recv()).startswith("40"):
            pass
        return ws

    async def churn_on(self, rate: float, stay: float, key: str) -> None:
        """Open `rate` connections a second to channel `key`, each gone after `stay` s."""
        start, i = time.monotonic(), 0
        while True:
            i += 1
            task = asyncio.create_task(self._visit(f"churn{i}", stay, key))
            self.visits.add(task)
            task.add_done_callback(self.visits.discard)
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))

    async def _visit(self, user: str, stay: float, key: str) -> None:
        """One short visit: connect, subscribe, count the events that arrive, leave."""
        try:
            ws = await asyncio.wait_for(self._handshake(Conn(key, False), user), 30)
        except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
            self.visit_failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"visit: {type(exc).__name__}: {exc}")
            return
        event = '{"type":"event"' if self.system != "anchor" else "42"
        try:
            async with asyncio.timeout(stay):
                async for raw in ws:
                    self.visit_frames += str(raw).startswith(event)
        except TimeoutError:
            pass
        except ConnectionClosed:
            self.visit_failed += 1
            return
        await ws.close()
        self.visited += 1

    def visits_so_far(self) -> dict[str, Any]:
        """What the visits saw since the last call; counting goes on."""
        out = {
            "visits": self.visited,
            "visits_failed": self.visit_failed,
            "visit_frames": self.visit_frames,
        }
        self.visited = self.visit_failed = self.visit_frames = 0
        return out

    async def churn_off(self) -> dict[str, Any]:
        """Stop opening connections, let the visits under way end, and say what they saw."""
        if self.churn is not None:
            self.churn.cancel()
            self.churn = None
        if self.visits:
            await asyncio.wait(list(self.visits), timeout=60)
        return self.visits_so_far()

    def _event(self, conn: Conn, data: dict[str, Any], now: float) -> None:
        if not self.first:
            self.first = now
        self.last = now
        conn.received += 1
        if conn.sample and "t" in data:
            self.latencies.append(now - data["t"])
        eid, n = int(data.get("e", 0)), int(data["n"])
        prev = conn.last.get(eid)
        if prev is not None and n <= prev:
            conn.dups += 1
            return
        if prev is not None and n > prev + 1:
            conn.gaps += n - prev - 1
        conn.last[eid] = n

    async def _read_taskcast(self, ws: ClientConnection, conn: Conn) -> None:
        loads, clock = orjson.loads, time.time
        try:
            async for raw in ws:
                now = clock()
                frame = loads(raw)
                kind = frame["type"]
                if kind == "event":
                    seq = frame["seq"]
                    if seq <= conn.last[-1]:
                        conn.dups += 1
                        continue
                    conn.last[-1] = seq
                    self._event(conn, frame["event"]["data"], now)
                elif kind == "subscribed" and frame.get("recovered") is False:
                    conn.told = True  # the server said events were lost
        except ConnectionClosed as exc:
            conn.close_code = exc.rcvd.code if exc.rcvd else None
            conn.told = conn.told or conn.close_code == 4008

    async def _read_anchor(self, ws: ClientConnection, conn: Conn) -> None:
        loads, clock = orjson.loads, time.time
        try:
            async for raw in ws:
                now = clock()
                text = str(raw)
                if text.startswith("42"):
                    _name, data = loads(text[2:])
                    self._event(conn, data, now)
                elif text == "2":
                    await ws.send("3")  # Engine.IO heartbeat: answer pings or be dropped
        except ConnectionClosed as exc:
            conn.close_code = exc.rcvd.code if exc.rcvd else None

    async def _idle(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                if raw == "2":
                    await ws.send("3")
        except ConnectionClosed:
            pass

    async def report(self, expected: int, timeout: float, raw: bool = False) -> dict[str, Any]:
        """Wait until `expected` events arrived (or nothing moved for 3 s), then summarise;
        `raw` adds every sampled latency in arrival order (for pooling windows)."""
        deadline = time.monotonic() + timeout
        seen, still = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = sum(c.received for c in self.conns)
            if got >= expected:
                break
            if got != seen:
                seen, still = got, time.monotonic()
            elif time.monotonic() - still > 3:
                break
            await asyncio.sleep(0.05)
        received = sum(c.received for c in self.conns)
        told = sum(1 for c in self.conns if c.told)
        lost = max(0, expected - received)
        silent = sum(c.gaps for c in self.conns if not c.told)
        if not told and lost > silent:
            silent = lost  # missing at the end, never announced
        lat = sorted(self.latencies)
        window = self.last - self.first
        result = {
            "connections": len(self.sockets),
            "failed": self.failed,
            "received": received,
            "expected": expected,
            "lost": lost,
            "dups": sum(c.dups for c in self.conns),
            "gaps": sum(c.gaps for c in self.conns),
            "told": told,
            "silent_loss": silent,
            "close_codes": sorted({c.close_code for c in self.conns if c.close_code}),
            "frames_per_s": received / window if window > 0 else 0.0,
            "lat_n": len(lat),
            "p50_ms": 1000 * percentile(lat, 0.5) if lat else None,
            "p99_ms": 1000 * percentile(lat, 0.99) if lat else None,
            "max_ms": 1000 * lat[-1] if lat else None,
        }
        if raw:
            result["latencies_ms"] = [round(1000 * x, 4) for x in self.latencies]
        if "churn" in self.conf:
            result.update(await self.churn_off())
            result["errors"] = self.errors
        for conn in self.conns:
            conn.received = conn.dups = conn.gaps = 0
        self.latencies, self.first, self.last = [], 0.0, 0.0
        return result


async def main() -> None:
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    load = Load(json.loads(await reader.readline()))
    await load.open_all()
    if not load.conns:
        # Only idle connections here: their pongs must not take the CPU from the measured
        # path (server, Redis, emitter, measured client) on this shared machine; in a real
        # deployment they are other people's computers.
        os.nice(19)
    ready = {"ready": len(load.sockets), "failed": load.failed, "retries": load.retries}
    print(json.dumps({**ready, "errors": load.errors}))
    sys.stdout.flush()
    if "churn" in load.conf:
        churn = load.conf["churn"]
        rate, stay, key = float(churn["rate"]), float(churn["stay"]), churn.get("key", "topic")
        load.churn = asyncio.create_task(load.churn_on(rate, stay, key))
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        if line[0] == "visits":
            print(json.dumps(load.visits_so_far()), flush=True)
        if line[0] == "report":
            result = await load.report(int(line[1]), float(line[2]), raw="raw" in line[3:])
            print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # the kernel closes every socket at once; the servers see them go


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
