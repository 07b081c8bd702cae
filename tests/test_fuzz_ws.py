"""Hypothesis frames against a live /ws: every bad frame gets a contract error, nothing breaks.

One connection takes random JSON shapes, random bytes, huge and negative numbers, deep
nesting, odd unicode and wrong types for every field; a second connection of another user
must keep receiving its events, in order, the whole time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from taskcast.realtime.tokens import issue

from .liveweb import SECRET, fresh_user, running_web
from .processes import RedisServer, Web

# Another test's leftover background thread (a retry loop with jitter) may touch the global
# `random` while Hypothesis draws; that says nothing about the server under test.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

CODES = {"bad_request", "bad_channel", "forbidden", "too_many_subscriptions", "rate_limited"}
REPLIES = {"error", "pong", "subscribed", "unsubscribed"}
RECV_TIMEOUT = 10.0
EXAMPLES = 250
ORDER = {"customer_id": "c1", "items": [{"sku": "A1", "qty": 1}]}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=12,
)
channels = st.one_of(
    st.sampled_from(["topic:system", "topic:orders", "user:fuzzer", "user:someone", "task:t1"]),
    st.builds(
        "{}:{}".format, st.sampled_from(["task", "user", "topic", "x", ""]), st.text(max_size=30)
    ),
    st.text(max_size=60),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
)
refs = st.one_of(json_values, st.text(max_size=300), numbers)
# Frames shaped like the contract's, each field either plausible or of a wrong type.
shaped = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]), json_values)},
    optional={
        "channel": st.one_of(channels, json_values),
        "since": st.one_of(numbers, json_values),
        "epoch": st.one_of(st.text(max_size=80), json_values),
        "ref": refs,
    },
)


def deep(n: int, kind: str) -> str:
    return "[" * n + "]" * n if kind == "list" else '{"a":' * n + "1" + "}" * n


frames: st.SearchStrategy[str | bytes] = st.one_of(
    shaped.map(json.dumps),
    st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=2000),  # odd unicode, not JSON
    st.binary(max_size=2000),  # binary frames
    st.builds(deep, st.integers(min_value=1, max_value=6000), st.sampled_from(["list", "dict"])),
    st.sampled_from(["", " ", "null", "NaN", "1e999", '{"op": "ping"', '{"op": "\\ud800"}']),
)


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """A node whose flood limit is out of the way: this test is about bad frames, not rates."""
    with running_web(
        redis_server,
        tmp_path_factory.mktemp("fuzzws"),
        TASKCAST_RATE_LIMIT="100000",
        TASKCAST_RATE_BURST="100000",
    ) as node:
        yield node


def recv(conn: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(conn.recv(timeout=RECV_TIMEOUT))
    return frame


def replies_until_probe(conn: ClientConnection, probe: str) -> list[dict[str, Any]]:
    """Every non-event frame before the pong that answers `probe`."""
    replies: list[dict[str, Any]] = []
    while True:
        frame = recv(conn)
        if frame.get("type") == "pong" and frame.get("ref") == probe:
            return replies
        if frame.get("type") != "event":
            replies.append(frame)


def check_reply(sent: str | bytes, replies: list[dict[str, Any]]) -> None:
    assert len(replies) == 1, (sent[:200], replies)
    reply = replies[0]
    assert reply["type"] in REPLIES, reply
    if reply["type"] == "error":
        assert reply["code"] in CODES, reply
        assert isinstance(reply["message"], str)
        assert "Traceback" not in reply["message"]
        assert len(reply["message"]) < 300
    try:
        obj = json.loads(sent)
    except (ValueError, RecursionError):  # not JSON, or too deep for the stdlib parser
        obj = None
    if isinstance(obj, dict) and "ref" in reply:
        assert reply["ref"] == obj.get("ref"), (obj, reply)


@pytest.mark.timeout(180)
def test_fuzzed_frames_get_contract_errors_and_never_disturb_others(web: Web) -> None:
    """Each hostile frame gets exactly one contract reply; a bystander keeps its events in order."""
    watcher_user = fresh_user("watcher")
    with (
        connect(f"{web.ws_url}?token={issue(SECRET, 'fuzzer')}", max_size=None) as fuzzer,
        connect(f"{web.ws_url}?token={issue(SECRET, watcher_user)}", max_size=None) as watcher,
        httpx.Client(
            base_url=web.url, headers={"Authorization": f"Bearer {issue(SECRET, watcher_user)}"}
        ) as http,
    ):
        assert recv(fuzzer)["type"] == "welcome"
        assert recv(watcher)["type"] == "welcome"
        watcher.send(json.dumps({"op": "subscribe", "channel": f"user:{watcher_user}"}))
        assert recv(watcher)["type"] == "subscribed"
        seen: list[int] = []
        count = 0

        def watcher_still_served() -> None:
            reply = http.post("/orders", json=ORDER)
            assert reply.status_code == 202, reply.text
            task_id = reply.json()["task_id"]
            while True:
                frame = recv(watcher)
                assert frame["type"] == "event", frame
                seen.append(frame["seq"])
                if frame["event"]["task_id"] == task_id:
                    return

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(frame=frames)
        def one_frame(frame: str | bytes) -> None:
            nonlocal count
            count += 1
            fuzzer.send(frame)
            probe = f"probe-{count}"
            fuzzer.send(json.dumps({"op": "ping", "ref": probe}))
            check_reply(frame, replies_until_probe(fuzzer, probe))
            if count % 25 == 0:
                watcher_still_served()

        one_frame()
        watcher_still_served()
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) >= 2
    assert web.alive()
    assert httpx.get(f"{web.url}/healthz").status_code == 200
    log = web.log()
    assert "Traceback" not in log, log[-3000:]
    assert "Exception in ASGI application" not in log
