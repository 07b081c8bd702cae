"""An ASGI app under uvicorn in the test's own event loop, with taskcast's protocols."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import uvicorn

from taskcast.api.wsprotocol import HttpProtocol, WebSocketProtocol

from .processes import free_port


@contextlib.asynccontextmanager
async def served(app: Any, **options: Any) -> AsyncIterator[int]:
    """Serve `app` on a free port (yielded) as the Procfile does; `options` go to
    `uvicorn.Config` (e.g. `http=` a subclass, `lifespan="off"`, keep-alive)."""
    port = free_port()
    settings: dict[str, Any] = {
        "http": HttpProtocol,
        "ws": WebSocketProtocol,
        "ws_max_size": 65536,
        "log_level": "warning",
    }
    settings.update(options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **settings))
    serving = asyncio.create_task(server.serve())
    try:
        with anyio.fail_after(15):
            while not server.started:
                assert not serving.done(), "uvicorn exited during start-up"
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        with anyio.fail_after(15):
            await serving
