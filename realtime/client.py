"""The Python client of `/ws`: subscriptions that survive reconnects, each seq exactly once.

    async with Client("http://127.0.0.1:8000", token) as client:
        async with client.subscribe("task:…") as sub:
            async for frame in sub:
                ...  # {"type": "event", "channel", "seq", "event"}

The client reconnects forever (capped exponential backoff with jitter) and resubscribes every
channel with `since` and `epoch`, so nothing still in history is lost and duplicates are
dropped by seq. When the server cannot resume (`recovered: false`) the subscription yields
that `subscribed` frame, whose `state` the caller should reload from.

`token` is a string, or a function (plain or async) returning one. A function is called for
each connection, again shortly before the connection's token expires (the new token replaces
it in place: `refresh`, no reconnect), and after the server ended the connection because its
token expired or was revoked (then the client reconnects with the new one). A token refused
when connecting (close 4401) raises `Unauthorized`, as does expiry or revocation with a plain
string; that is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, WebSocketException

from .errors import Forbidden, TaskcastError, TokenExpired, TokenRevoked, Unauthorized
from .protocol import WS_4401_UNAUTHORIZED

logger = logging.getLogger("taskcast.client")
# Our own generator: retry jitter must not touch the global `random` state of the host.
_jitter = random.Random()

Frame = dict[str, Any]
TokenSource = str | Callable[[], str | Awaitable[str]]

BACKOFF_FIRST, BACKOFF_CAP = 0.1, 10.0
OPEN_TIMEOUT = 10.0
QUEUE_SIZE = 10_000
MAX_FRAME = 16 * 1024 * 1024
REFRESH_AHEAD = 30.0  # seconds before `expires_at` a token function is asked for a new token
ENDED_BY = {c.code: c for c in (TokenExpired, TokenRevoked)}  # error codes before a 4401


def ws_url(url: str) -> str:
    """`http(s)://host[:port]` becomes `ws(s)://host[:port]/ws`; a `ws(s)://` URL is kept."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _error_for(frame: Frame) -> TaskcastError:
    """The `TaskcastError` subclass named by an error frame's code."""
    code = frame.get("code")
    message = str(frame.get("message") or code)
    pending: list[type[TaskcastError]] = [TaskcastError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls(message)
        pending.extend(cls.__subclasses__())
    return TaskcastError(message)


class Subscription:
    """One channel's stream on a `Client`: an async iterator of frames, resumed after reconnects.

    `seq` is the last seq delivered, `epoch` the channel's epoch, `state` the task state from
    the latest `subscribed` frame (task channels only).
    """

    def __init__(
        self, client: Client, channel: str, since: int | None, epoch: str | None, size: int
    ) -> None:
        self.client = client
        self.channel = channel
        self.seq: int | None = since
        self.epoch = epoch
        self.state: Frame | None = None
        self.duplicates = 0
        self.ref = f"sub-{next(client._refs)}"
        self._sent_on = 0  # the connection number this subscription was last sent on
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(size)
        self._wake = asyncio.Event()
        self._first: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._error: BaseException | None = None
        self._closed = False

    def subscribe_frame(self) -> Frame:
        frame: Frame = {"op": "subscribe", "channel": self.channel, "ref": self.ref}
        if self.seq is not None:
            frame["since"] = self.seq
            if self.epoch is not None:
                frame["epoch"] = self.epoch
        return frame

    async def ready(self, timeout: float | None = None) -> Frame:
        """The first `subscribed` frame (carries `seq`, `epoch` and, for tasks, `state`)."""
        await self.client._send_subscribe(self)
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self._first)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Frame:
        await self.client._send_subscribe(self)
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def close(self) -> None:
        """Unsubscribe and end the iteration."""
        if self._closed:
            return
        self._finish(None)
        if self.client._subs.get(self.channel) is self:
            del self.client._subs[self.channel]
            await self.client._send({"op": "unsubscribe", "channel": self.channel})

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _on_subscribed(self, frame: Frame) -> None:
        self.epoch = frame.get("epoch", self.epoch)
        if "state" in frame:
            self.state = frame["state"]
        recovered = frame.get("recovered")
        if recovered is not True:
            # A fresh start or a lost stream: continue from the server's current seq.
            self.seq = int(frame.get("seq", 0))
        if not self._first.done():
            self._first.set_result(frame)
        if recovered is False:
            await self._put(frame)

    async def _on_event(self, frame: Frame) -> None:
        seq = frame.get("seq")
        if not isinstance(seq, int):
            return
        if self.seq is not None and seq <= self.seq:
            self.duplicates += 1
            return
        self.seq = seq
        await self._put(frame)

    async def _put(self, frame: Frame) -> None:
        if self._closed:
            return
        # A full queue holds the reader back, and the server's own bound takes over.
        await self._queue.put(frame)
        self._wake.set()

    def _finish(self, error: BaseException | None) -> None:
        self._closed = True
        if error is not None and self._error is None:
            self._error = error
            if not self._first.done():
                self._first.set_exception(error)
                self._first.exception()  # retrieved: ready() may never be awaited
        elif not self._first.done():
            self._first.set_exception(ConnectionError(f"subscription to {self.channel} closed"))
            self._first.exception()
        self._wake.set()


class Client:
    """One `/ws` connection, kept open for as long as the client is, carrying any subscriptions."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        backoff_first: float = BACKOFF_FIRST,
        backoff_cap: float = BACKOFF_CAP,
        open_timeout: float = OPEN_TIMEOUT,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.url = ws_url(url)
        self._token = token
        self.backoff_first = backoff_first
        self.backoff_cap = backoff_cap
        self.open_timeout = open_timeout
        self.queue_size = queue_size
        self.welcome: Frame | None = None
        self.connections = 0  # successful connections so far; >1 means it reconnected
        self._subs: dict[str, Subscription] = {}
        self._refs = itertools.count(1)
        self._conn: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None  # set when connected or failed
        self._error: BaseException | None = None
        self._closing = False
        self._ended_by: str | None = None  # the error code the server sent before closing
        self._refreshed: asyncio.Future[Frame] | None = None  # the pending refresh's reply

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the token

    async def __aenter__(self) -> Client:
        self._changed = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name="taskcast-client")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def subscribe(
        self, channel: str, *, since: int | None = None, epoch: str | None = None
    ) -> Subscription:
        """Follow `channel`; with `since`, start after that seq (replayed from history)."""
        if self._runner is None:
            raise RuntimeError("use `async with Client(...)` before subscribing")
        if self._error is not None:
            raise self._error
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel}")
        sub = Subscription(self, channel, since, epoch, self.queue_size)
        self._subs[channel] = sub
        return sub

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the connection is open; raises the client's error if it gave up."""
        assert self._changed is not None
        async with asyncio.timeout(timeout):
            while self._conn is None:
                if self._error is not None:
                    raise self._error
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        """Close the connection and end every subscription's iteration."""
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for sub in list(self._subs.values()):
            sub._finish(None)
        self._subs.clear()

    async def _send(self, frame: Frame) -> None:
        conn = self._conn
        if conn is None:
            return  # the next connection sends what is still wanted
        with contextlib.suppress(WebSocketException):
            await conn.send(json.dumps(frame))

    async def _send_subscribe(self, sub: Subscription) -> None:
        if self._conn is None or sub._closed or sub._sent_on == self.connections:
            return
        sub._sent_on = self.connections
        await self._send(sub.subscribe_frame())

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._connect_once()
                attempt = 0  # a connection that opened resets the backoff
            except Unauthorized as exc:  # refused at the door (4401): retrying cannot help
                self._fail(exc)
                return
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException, ValueError) as exc:
                logger.info("taskcast connection to %s failed: %s", self.url, type(exc).__name__)
            if self._closing:
                return
            delay = min(self.backoff_cap, self.backoff_first * 2**attempt)
            attempt += 1
            await asyncio.sleep(delay / 2 + _jitter.uniform(0, delay / 2))

    async def _fresh_token(self) -> str:
        """The token to use now: the string given, or what the token function returns."""
        source = self._token
        if isinstance(source, str):
            return source
        try:
            value = source()
            if inspect.isawaitable(value):
                value = await value
        except Unauthorized:
            raise
        except Exception as exc:  # an identity provider away: retried like a network error
            raise ConnectionError(f"the token function failed: {type(exc).__name__}") from exc
        if not isinstance(value, str) or not value:
            raise Unauthorized("the token function returned no token")
        return value

    async def _refresh(self, conn: ClientConnection, expires_at: int) -> None:
        """Ask the token function for a new token ahead of `expires_at` and hand it to the
        server (`refresh`), for as long as each new token lives longer than the last."""
        ahead = min(REFRESH_AHEAD, max(0.0, (expires_at - time.time()) / 2))
        while True:
            await asyncio.sleep(max(0.0, expires_at - ahead - time.time()))
            token = await self._fresh_token()
            ref = f"refresh-{next(self._refs)}"
            self._refreshed = asyncio.get_running_loop().create_future()
            await conn.send(json.dumps({"op": "refresh", "token": token, "ref": ref}))
            reply = await self._refreshed
            renewed = reply.get("expires_at")
            if reply.get("type") != "refreshed" or not isinstance(renewed, int):
                # Refused: the old token stays; the server ends the connection when it
                # expires, and the next connection asks the function again.
                logger.info("taskcast token refresh refused: %s", reply.get("code"))
                return
            if renewed <= expires_at:
                return  # no longer-lived token on offer: reconnect when this one ends
            ahead = min(REFRESH_AHEAD, max(0.0, (renewed - time.time()) / 2))
            expires_at = renewed

    async def _connect_once(self) -> None:
        headers = {"Authorization": f"Bearer {await self._fresh_token()}"}
        refresher: asyncio.Task[None] | None = None
        async with websockets.connect(
            self.url,
            additional_headers=headers,
            open_timeout=self.open_timeout,
            max_size=MAX_FRAME,
        ) as conn:
            try:
                async with asyncio.timeout(self.open_timeout):
                    first = json.loads(await conn.recv())
                if first.get("type") == "error":
                    if first.get("code") == Unauthorized.code:
                        raise Unauthorized(
                            str(first.get("message") or Unauthorized.default_message)
                        )
                    raise ConnectionError(f"refused: {first.get('code')}")  # e.g. too many, retry
                self.welcome = first
                self._conn = conn
                self._ended_by = None
                self.connections += 1
                assert self._changed is not None
                self._changed.set()
                expires_at = first.get("expires_at")
                if not isinstance(self._token, str) and isinstance(expires_at, int):
                    refresher = asyncio.create_task(self._refresh(conn, expires_at))
                for sub in list(self._subs.values()):
                    await self._send_subscribe(sub)
                async for raw in conn:
                    await self._dispatch(json.loads(raw))
            except ConnectionClosed:
                pass  # the close code below says what happened
            finally:
                self._conn = None
                if refresher is not None:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await refresher
                if self._refreshed is not None and not self._refreshed.done():
                    self._refreshed.cancel()
                self._refreshed = None
        if conn.close_code == WS_4401_UNAUTHORIZED:
            ended = ENDED_BY.get(self._ended_by or "")
            if ended is not None and not isinstance(self._token, str):
                logger.info("taskcast token ended (%s); reconnecting with a new one", ended.code)
                return
            raise ended() if ended is not None else Unauthorized("the server closed: unauthorized")
        logger.info("taskcast connection closed (%s); reconnecting", conn.close_code)

    async def _dispatch(self, frame: Frame) -> None:
        kind = frame.get("type")
        sub = self._subs.get(str(frame.get("channel")))
        if kind == "event" and sub is not None:
            await sub._on_event(frame)
        elif kind == "subscribed" and sub is not None:
            await sub._on_subscribed(frame)
        elif kind == "unsubscribed" and sub is not None and frame.get("reason"):
            # The server ended it: a refreshed token no longer allows the channel.
            del self._subs[sub.channel]
            sub._finish(Forbidden(f"no longer allowed to subscribe to {sub.channel}"))
        elif kind == "refreshed" or (kind == "error" and self._refreshing(frame)):
            if self._refreshed is not None and not self._refreshed.done():
                self._refreshed.set_result(frame)
        elif kind == "error":
            self._on_error(frame)

    @staticmethod
    def _refreshing(frame: Frame) -> bool:
        return str(frame.get("ref")).startswith("refresh-")

    def _on_error(self, frame: Frame) -> None:
        if frame.get("ref") is None and frame.get("code") in ENDED_BY:
            self._ended_by = frame["code"]  # the close (4401) follows
        ref = frame.get("ref")
        for channel, sub in list(self._subs.items()):
            if sub.ref == ref:
                del self._subs[channel]
                sub._finish(_error_for(frame))
                return
        logger.info("taskcast server error: %s", frame.get("code"))

    def _fail(self, error: BaseException) -> None:
        self._error = error
        if self._changed is not None:
            self._changed.set()
        for sub in list(self._subs.values()):
            sub._finish(error)
        self._subs.clear()
