"""The shop's existing FastAPI app: its own sign-in and routes, taskcast mounted at /realtime.

Users sign in with the shop (here: a name, to keep the example short); the shop signs their
tokens with its RS256 key, and taskcast checks them with the public key alone.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import jwt
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel
from tasks import export_report

import taskcast

PRIVATE_KEY = Path(os.environ["SHOP_PRIVATE_KEY"]).read_text()
PUBLIC_KEY = Path(os.environ["TASKCAST_JWT_PUBLIC_KEY"]).read_text()  # taskcast reads it too
realtime = taskcast.realtime_app()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with realtime.lifespan(app):  # a mounted app's own lifespan never runs
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/realtime", realtime)


class Login(BaseModel):
    user: str


def user_of(authorization: str) -> str:
    """The shop's own check of its own token."""
    try:
        token = authorization.removeprefix("Bearer ")
        claims = jwt.decode(token, PUBLIC_KEY, algorithms=["RS256"])
    except jwt.PyJWTError:
        raise HTTPException(401, "sign in first") from None
    return str(claims["sub"])


@app.post("/login")
def login(body: Login) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": body.user, "iat": now, "exp": now + 3600}
    return {"token": jwt.encode(claims, PRIVATE_KEY, algorithm="RS256")}


@app.post("/reports", status_code=202)
async def create_report(authorization: str = Header()) -> dict[str, str]:
    user = user_of(authorization)
    sent = await asyncio.to_thread(taskcast.enqueue, export_report, 5, owner=user)
    return {"task_id": sent.task_id, "channel": sent.channel}
