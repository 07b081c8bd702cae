"""The FastAPI app: a lifespan that wires store, broadcaster and hub; routes; static page."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from taskcast.realtime import (
    Hub,
    Publisher,
    Settings,
    Store,
    get_settings,
    metrics,
    redaction,
    registry,
)
from taskcast.realtime.access import Access, load_policy
from taskcast.realtime.backend import make_backend, shares_redis
from taskcast.realtime.connections import redis_client
from taskcast.realtime.protocol import WS_1012_SERVICE_RESTART
from taskcast.realtime.reaper import BrokerQueues, Reaper
from taskcast.realtime.tokens import Verifier
from taskcast.workers.signatures import redis_broker, sender

from . import auth, errors, inventory, ops, orders, publish, sse, tasks, users
from .collector import Collector
from .deps import Node, NodeDep
from .limits import BodyLimit
from .ws import WebSocketEndpoint

STATIC = Path(__file__).parent / "static"
DEMO_FLAG = 'content="demo-sign-in"'  # index.html's <meta name="taskcast-demo">, set per node
logger = logging.getLogger("taskcast.api")


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (Starlette keeps the full path in `path`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class App(FastAPI):
    """FastAPI whose `/ws` goes straight to its endpoint, past its own middleware stack.

    A WebSocket lives for hours: every layer it passes through (telemetry, error handling,
    routing) is a coroutine frame held per connection, and a wrapper on every `send`.
    `lifespan` is the node's start-up and shutdown, for a host app that mounts this one to
    run (a mounted app's own lifespan never runs).
    """

    def __init__(self, lifespan: Lifespan, **options: Any) -> None:
        super().__init__(lifespan=lifespan, **options)
        self.lifespan = lifespan
        self.ws_endpoint = WebSocketEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and route_path(scope) == "/ws":
            scope["app"] = self
            await self.ws_endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


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


def realtime_app(settings: Settings | None = None, *, process_hooks: bool = False) -> App:
    """taskcast's web side as an ASGI app to mount in yours: `/ws`, `/sse`, `/tasks/{id}`,
    `/tasks/{id}/cancel`, `/publish`, `/users/{id}/revoke`, `/healthz`, `/readyz`, `/metrics`,
    `/ws/stats`, and the browser files under `/static`.

    Mount it (`host.mount("/realtime", app)`) and run its `lifespan` in the host's
    (`FastAPI(lifespan=app.lifespan)`, or `async with app.lifespan(host): ...` inside your
    own). It changes nothing outside itself but keep tokens out of uvicorn's and taskcast's
    log lines; `process_hooks` (the standalone web process) also redacts every logger, makes
    full garbage collections walk only new objects, and ends `/sse` streams on SIGTERM.
    """
    app: App

    @asynccontextmanager
    async def lifespan(_: Any = None) -> AsyncIterator[None]:
        conf = settings or get_settings()
        redaction.install(every_logger=process_hooks)
        registry.load(conf.import_modules)  # an app's own event types and topics
        verifier = Verifier(conf.token_rules())
        policy = load_policy(conf.authorize) if conf.authorize else None
        redis = redis_client(conf.redis_url)
        store = Store(
            redis,
            history_size=conf.history_size,
            history_ttl=conf.history_ttl,
            history_max_bytes=conf.history_max_bytes,
            max_deliveries=conf.max_deliveries,
            publish=shares_redis(conf.broadcast, conf.redis_url),
            wait_replicas=conf.redis_wait,
            wait_timeout_ms=conf.redis_wait_timeout,
        )
        # The node's hub is the backend's only subscriber (see realtime/hub.py).
        backend = make_backend(conf.broadcast)
        node_id = conf.node_id or f"{socket.gethostname()}-{os.getpid()}"
        await backend.connect()
        try:
            limit, limited_by = conf.event_limit
            publisher = Publisher(store, backend, max_event_bytes=limit, limited_by=limited_by)
            celery = sender(conf.redis_url, conf.broker_url)
            async with AsyncExitStack() as closing:
                broker = _broker_queues(celery, conf.broker, conf.redis_url, redis, closing)
                reaper = Reaper(
                    publisher, node_id, conf.stale_after, conf.queued_stale_after, broker
                )
                hub = Hub(backend, store, revocation_ttl=conf.revocation_ttl)
                await closing.enter_async_context(hub)
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
                    process_hooks=process_hooks,
                )
                logger.info("node %s ready", node_id)
                # Full collections walk only what is new: with many connections a walk of
                # the whole heap stalls every socket on the node for a large part of a second.
                collector = Collector() if process_hooks else None
                if collector is not None:
                    collector.install()
                try:
                    yield
                finally:
                    if collector is not None:
                        collector.uninstall()
                    for session in list(hub.sessions):
                        session.close_soon(WS_1012_SERVICE_RESTART, "server restarting")
        finally:
            await backend.disconnect()
            await redis.aclose()

    app = App(lifespan, title="taskcast", version="0.1.0")
    app.add_middleware(BodyLimit)
    app.state.metrics = metrics.registry()
    errors.install(app)
    app.include_router(tasks.router)
    app.include_router(ops.router)
    app.include_router(sse.router)
    app.include_router(publish.router)
    app.include_router(users.router)
    # The browser package and the drop-in elements, served where the app is mounted.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def create_server(settings: Settings | None = None) -> App:
    """taskcast's web side as a server of its own, beside an app in any framework (as people
    run Centrifugo): the realtime app at `/` with the process-wide hooks, no demo, and the
    browser files at `/static` (`taskcast.js`, `taskcast-elements.js`).

    `uvicorn --factory taskcast.api.main:create_server`, with the protocols of the Procfile.
    """
    return realtime_app(settings, process_hooks=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The standalone web process (Procfile, `taskcast up`): the realtime app at `/` with the
    process-wide hooks a server of its own wants, the demo's routes and the dashboard.

    Settings are read when it starts unless given (tests pass their own).
    """
    import taskcast.workers.demo_events  # noqa: F401 - the demo's event types and topics (orders, …)

    app = realtime_app(settings, process_hooks=True)
    app.include_router(orders.router)
    app.include_router(inventory.router)
    app.include_router(auth.router)  # answers 404 unless embedded

    # The page learns from the server whether demo sign-in exists, so it never probes for it.
    page = (STATIC / "index.html").read_text()
    pages = {
        demo: page.replace(DEMO_FLAG, f'content="{"on" if demo else "off"}"')
        for demo in (True, False)
    }

    @app.get("/", include_in_schema=False)
    async def index(node: NodeDep) -> HTMLResponse:
        return HTMLResponse(pages[node.settings.embedded])

    return app
