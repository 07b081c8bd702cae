"""The billing team's Flask app: it signs its users in, enqueues on their behalf and mints the
tokens their pages give taskcast. taskcast's own web process runs beside it."""

from __future__ import annotations

import os
import time

import jwt
from flask import Flask, abort, request
from tasks import build_invoice

import taskcast

SECRET = os.environ["TASKCAST_JWT_SECRET"]  # shared with taskcast's web process
app = Flask(__name__)


def signed_in_user() -> str:
    """The app's own session check (here: a token it minted itself)."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    try:
        return str(jwt.decode(token, SECRET, algorithms=["HS256"])["sub"])
    except jwt.PyJWTError:
        abort(401)


@app.post("/login")
def login() -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": request.get_json()["user"], "iat": now, "exp": now + 3600}
    return {"token": jwt.encode(claims, SECRET, algorithm="HS256")}


@app.post("/invoices")
def create_invoice() -> tuple[dict[str, str], int]:
    sent = taskcast.enqueue(build_invoice, 3, owner=signed_in_user())
    return {"task_id": sent.task_id, "channel": sent.channel}, 202
