"""A web app of its own that mounts taskcast at a prefix, as an adopting team writes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from taskcast.api.main import realtime_app


def create() -> FastAPI:
    """The host's app: its own route and lifespan, taskcast's web side under `/realtime`."""
    realtime = realtime_app()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with realtime.lifespan(app):  # a mounted app's own lifespan never runs
            yield

    host = FastAPI(lifespan=lifespan)

    @host.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "from the host"}

    host.mount("/realtime", realtime)
    return host
