"""The pipeline end to end: an order posted over HTTP streams its events to a WebSocket client."""

from __future__ import annotations

import httpx
import pytest

from .processes import Web, Worker
from .wsclient import WS, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_order_streams_to_subscriber(web: Web, worker: Worker, make_token) -> None:
    """A subscriber sees seq 1..N without gaps, one terminal event, and GET /tasks agrees."""
    token = make_token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=web.url, headers=headers) as http:
        reply = await http.post(
            "/orders", json={"customer_id": "c1", "items": [{"sku": "A1", "qty": 2}]}
        )
        assert reply.status_code == 202, reply.text
        task_id = reply.json()["task_id"]
        ws = await WS.open(web.ws_url, token)
        assert (await ws.recv())["type"] == "welcome"
        sub = await ws.subscribe(f"task:{task_id}", since=0)
        assert sub["type"] == "subscribed"
        await ws.recv_until(terminal, timeout=20)
        events = ws.events()
        assert [f["seq"] for f in events] == list(range(1, len(events) + 1))
        assert sum(terminal(f) for f in events) == 1
        assert events[-1]["event"]["type"] == "task.succeeded"
        state = (await http.get(f"/tasks/{task_id}")).json()
        assert state["status"] == "succeeded"
        assert state["seq"] == events[-1]["seq"]
        await ws.close()
