"""A small WebSocket test client over `websockets`, with deadline-bounded waits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import websockets
from websockets.asyncio.client import ClientConnection

Frame = dict[str, Any]


class WS:
    """One test connection; `frames` keeps everything received, in order."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[Frame] = []

    @classmethod
    async def open(cls, url: str, token: str | None = None, **kwargs: Any) -> WS:
        target = f"{url}?token={token}" if token else url
        return cls(await websockets.connect(target, max_size=None, **kwargs))

    async def send(self, frame: Frame | str) -> None:
        await self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> Frame:
        with anyio.fail_after(timeout):
            raw = await self.conn.recv()
        frame: Frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def recv_until(self, predicate: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        """Receive until a frame matches; fails with the frames seen when the deadline passes."""
        try:
            with anyio.fail_after(timeout):
                while True:
                    frame = await self.recv(timeout)
                    if predicate(frame):
                        return frame
        except TimeoutError:
            tail = json.dumps(self.frames[-5:])[:2000]
            raise TimeoutError(
                f"no matching frame within {timeout}s; last frames: {tail}"
            ) from None

    async def subscribe(self, channel: str, **extra: Any) -> Frame:
        await self.send({"op": "subscribe", "channel": channel, **extra})
        return await self.recv_until(
            lambda f: f.get("channel") == channel and f["type"] in ("subscribed", "error")
        )

    def events(self, channel: str | None = None) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f["type"] == "event" and (channel is None or f["channel"] == channel)
        ]

    async def close(self) -> None:
        await self.conn.close()

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code


def terminal(frame: Frame) -> bool:
    return frame.get("type") == "event" and frame["event"]["type"] in (
        "task.succeeded",
        "task.failed",
        "task.cancelled",
    )


async def order_in_flight(base_url: str, ws_url: str, token: str) -> tuple[WS, str]:
    """Post an order, subscribe to its task from seq 1, and wait until a worker runs it."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        reply = await http.post(
            "/orders",
            json={"customer_id": "c", "items": [{"sku": "A", "qty": 1}]},
            headers={"Authorization": f"Bearer {token}"},
        )
    task_id = reply.json()["task_id"]
    ws = await WS.open(ws_url, token)
    await ws.recv()
    await ws.subscribe(f"task:{task_id}", since=0)
    await ws.recv_until(lambda f: f.get("event", {}).get("type") == "task.progress", timeout=20)
    return ws, task_id
