"""Slow consumers: bounded per-connection queues; a stalled reader cannot hurt anyone else."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from .processes import ROOT, Web, Worker
from .wsclient import WS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(120)]

EVENTS = 3000
RSS_BOUND_MB = 200


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class StalledClient:
    """A WebSocket client that stops reading its socket (tiny receive buffer, no reads)."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws?token={token}"))
        self.frames = 0

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.proto.data_to_send():
            await loop.sock_sendall(self.sock, data)

    async def open(self, channel: str) -> None:
        self.proto.send_request(self.proto.connect())
        await self._flush()
        while self.proto.handshake_exc is None and not self.proto.events_received():
            self.proto.receive_data(await asyncio.get_running_loop().sock_recv(self.sock, 4096))
            if self.proto.state.name == "OPEN":
                break
        self.proto.send_text(f'{{"op": "subscribe", "channel": "{channel}"}}'.encode())
        await self._flush()

    async def read_to_close(self) -> int | None:
        """Resume reading: count frames until the server closes; the close code."""
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 1 << 16)
            if not data:
                self.proto.receive_eof()
            else:
                self.proto.receive_data(data)
            for event in self.proto.events_received():
                if isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                    self.frames += 1
            await self._flush()
            if self.proto.close_code is not None or not data:
                self.sock.close()
                return self.proto.close_code


async def test_stalled_reader_is_cut_off_and_others_keep_flowing(
    redis_url: str, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """While one reader is stalled, another on the same channel gets every event in order; RSS
    stays bounded; the stalled one gets 4008 and catches up from history."""
    web = spawn(
        "web", TASKCAST_OUTBOUND_MAX_FRAMES="256", TASKCAST_OUTBOUND_MAX_BYTES=str(512 * 1024)
    )
    assert isinstance(web, Web)
    token = make_token("erin")
    slow = StalledClient(web.port, token)
    await slow.open("user:erin")
    reader = subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block the loop
        [sys.executable, "-m", "tests.read_load", web.ws_url, token, "user:erin", str(EVENTS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        with anyio.fail_after(20):
            ready = await anyio.to_thread.run_sync(reader.stdout.readline)
        assert ready.strip() == "ready"
        rss_before = rss_mb(web.proc.pid)
        load = subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block the loop
            [
                sys.executable,
                "-m",
                "tests.emit_load",
                redis_url,
                "erin",
                str(EVENTS),
                "1000",
                "8000",
            ],
            cwd=ROOT,
        )
        with anyio.fail_after(60):
            report = json.loads(await anyio.to_thread.run_sync(reader.stdout.readline))
        assert await anyio.to_thread.run_sync(load.wait, 30) == 0
        assert report["seqs"] == list(range(1, EVENTS + 1)), "the reading client missed events"
        assert slow.frames == 0, "the stalled reader read nothing meanwhile"
        rss_after = rss_mb(web.proc.pid)
        print(f"RSS {rss_before:.0f} -> {rss_after:.0f} MB")
        assert rss_after < RSS_BOUND_MB

        # The stalled reader resumes reading: it gets what was in flight, then close 4008.
        with anyio.fail_after(30):
            code = await slow.read_to_close()
        assert code == 4008, f"slow consumer closed with {code}"
        assert slow.frames < EVENTS
        print(f"stalled reader got {slow.frames} frames, then 4008")

        # ...and catches up from history with `since`, losing nothing.
        again = await WS.open(web.ws_url, token)
        await again.recv()
        reply = await again.subscribe("user:erin", since=0)
        assert reply["recovered"] is True
        await again.recv_until(lambda f: f.get("seq") == EVENTS, timeout=30)
        assert [f["seq"] for f in again.events()] == list(range(1, EVENTS + 1))
        assert all(f["event"]["data"]["title"] == f"n{f['seq'] - 1}" for f in again.events())
        await again.close()
        assert reader.wait(10) == 0
    finally:
        for proc in (reader, locals().get("load")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
        reader.stdout.close()
