"""Operations routes: health, readiness, Prometheus metrics and the node's relay stats."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from taskcast.realtime import Emitter
from taskcast.realtime.errors import EventTooLarge

from .processes import Web
from .wsclient import WS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_metrics_and_stats_count_what_the_node_relayed(
    web: Web, redis_url: str, make_token: Callable[..., str]
) -> None:
    """After events reach a subscriber, /metrics and /ws/stats show them; stats need admin."""
    token = make_token("kim")
    ws = await WS.open(web.ws_url, token)
    await ws.recv()
    await ws.subscribe("user:kim")
    emitter = Emitter(redis_url)
    for i in range(3):
        emitter.emit("notification", data={"title": f"n{i}"}, user_id="kim")
    assert emitter.flush(10)
    await ws.recv_until(lambda f: f.get("seq") == 3)
    async with httpx.AsyncClient(base_url=web.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = (await http.get("/readyz")).json()
        assert ready["checks"] == {"redis": True, "pubsub": True}
        text = (await http.get("/metrics")).text
        assert "taskcast_events_in_total 3.0" in text
        assert "taskcast_frames_out_total" in text
        assert 'taskcast_event_age_seconds_bucket{le="+Inf"} 3.0' in text
        assert "taskcast_connections 1.0" in text
        admin = {"Authorization": f"Bearer {make_token('root', ('admin',))}"}
        stats = (await http.get("/ws/stats", headers=admin)).json()
        assert stats["connections"] == 1
        assert stats["subscriptions"] == 1
        assert stats["events_in"] == 3
        assert stats["node"]
        user = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/ws/stats", headers=user)).status_code == 403
        assert (await http.get("/ws/stats")).status_code == 401
    await ws.close()


async def test_an_emitter_refusal_shows_in_metrics_and_reaches_no_one(
    web: Web, redis_url: str, make_token: Callable[..., str]
) -> None:
    """A too-large event refused in a worker is counted in every node's /metrics, and a
    subscriber of its channel receives only the events that fit."""
    token = make_token("lee")
    ws = await WS.open(web.ws_url, token)
    await ws.recv()
    await ws.subscribe("user:lee")
    emitter = Emitter(redis_url)
    with pytest.raises(EventTooLarge, match=r"^notification event of \d+ bytes"):
        emitter.emit("notification", data={"title": "t", "blob": "a" * 20_000_000}, user_id="lee")
    emitter.emit("notification", data={"title": "fits"}, user_id="lee")
    assert emitter.flush(10)
    frame = await ws.recv_until(lambda f: f.get("type") == "event")
    assert (frame["seq"], frame["event"]["data"]["title"]) == (1, "fits")
    async with httpx.AsyncClient(base_url=web.url) as http:
        text = (await http.get("/metrics")).text
    assert "taskcast_events_too_large_total 1.0" in text
    await ws.close()
