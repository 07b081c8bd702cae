"""The FastAPI app: a lifespan that wires store, broadcaster and hub; routes; static page."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from realtime import Hub, Publisher, Settings, Store, get_settings, metrics, redaction
from realtime.access import Access, load_policy
from realtime.backend import make_backend, shares_redis
from realtime.connections import redis_client
from realtime.protocol import WS_1012_SERVICE_RESTART
from realtime.reaper import BrokerQueues, Reaper
from realtime.tokens import Verifier
from workers.signatures import redis_broker, sender

from . import auth, errors, inventory, ops, orders, sse, tasks
from .collector import Collector
from .deps import Node
from .limits import BodyLimit
from .ws import WebSocketEndpoint

STATIC = Path(__file__).parent / "static"
logger = logging.getLogger("taskcast.api")


class App(FastAPI):
    """FastAPI whose `/ws` goes straight to its endpoint, past the whole middleware stack.

    A WebSocket lives for hours: every layer it passes through (telemetry, error handling,
    routing) is a coroutine frame held per connection, and a wrapper on every `send`.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.ws_endpoint = WebSocketEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = self
            await self.ws_endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _broker_queues(
    celery: Celery, broker_url: str, redis_url: str, redis: Redis, closing: AsyncExitStack
) -> BrokerQueues | None:
    """What the reaper searches for queued tasks' messages; None (and a log line) if it can't."""
    found = redis_broker(celery, broker_url)
    if isinstance(found, str):
        logger.warning("queued tasks are not checked against the broker: %s", found)
        return None
    if broker_url == redis_url:
        return BrokerQueues(redis, found)
    own = redis_client(broker_url)
    closing.push_async_callback(own.aclose)
    return BrokerQueues(own, found)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings are read when it starts unless given (tests pass their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conf = settings or get_settings()
        verifier = Verifier(conf.token_rules())
        policy = load_policy(conf.authorize) if conf.authorize else None
        redis = redis_client(conf.redis_url)
        store = Store(
            redis,
            history_size=conf.history_size,
            history_ttl=conf.history_ttl,
            max_deliveries=conf.max_deliveries,
            publish=shares_redis(conf.broadcast, conf.redis_url),
        )
        # The node's hub is the backend's only subscriber (see realtime/hub.py).
        backend = make_backend(conf.broadcast)
        node_id = conf.node_id or f"{socket.gethostname()}-{os.getpid()}"
        await backend.connect()
        try:
            publisher = Publisher(store, backend)
            celery = sender(conf.redis_url, conf.broker_url)
            async with AsyncExitStack() as closing:
                broker = _broker_queues(celery, conf.broker, conf.redis_url, redis, closing)
                reaper = Reaper(
                    publisher, node_id, conf.stale_after, conf.queued_stale_after, broker
                )
                hub = await closing.enter_async_context(Hub(backend, store))
                await closing.enter_async_context(reaper)
                app.state.node = Node(
                    settings=conf,
                    redis=redis,
                    store=store,
                    hub=hub,
                    publisher=publisher,
                    sender=celery,
                    node_id=node_id,
                    verifier=verifier,
                    access=Access(store, policy),
                )
                logger.info("node %s ready", node_id)
                # Full collections walk only what is new: with many connections a walk of
                # the whole heap stalls every socket on the node for a large part of a second.
                collector = Collector()
                collector.install()
                try:
                    yield
                finally:
                    collector.uninstall()
                    for session in list(hub.sessions):
                        session.close_soon(WS_1012_SERVICE_RESTART, "server restarting")
        finally:
            await backend.disconnect()
            await redis.aclose()

    redaction.install()  # uvicorn has configured logging by now; tokens never reach a log
    app = App(title="taskcast", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit)
    app.state.metrics = metrics.registry()
    errors.install(app)
    app.include_router(orders.router)
    app.include_router(inventory.router)
    app.include_router(tasks.router)
    app.include_router(ops.router)
    app.include_router(sse.router)
    app.include_router(auth.router)  # answers 404 unless embedded

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
