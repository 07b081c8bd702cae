"""A live web node shared by one test module: attacker tests probe a real uvicorn from outside.

Starting uvicorn costs a second or two, so a module starts one and its tests isolate
themselves with fresh user ids instead of flushing Redis under the running process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import BIN, SECRET, Process, RedisServer, Web, base_env, free_port


class PlainWeb(Web):
    """uvicorn with its own defaults (16 MiB frames): the app's limits must hold by themselves."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "plainweb") -> None:
        self.port = free_port()
        args = [
            str(BIN / "uvicorn"), "--factory", "taskcast.api.main:create_app",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        Process.__init__(self, name, args, env, log_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"


@contextmanager
def running_web(
    redis_server: RedisServer, log_dir: Path, plain: bool = False, **env: str
) -> Iterator[Web]:
    """One uvicorn `web` process (as the Procfile runs it, or `plain` uvicorn) against the
    session's private Redis, stopped on exit."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a fault test may have left it down
    full_env = base_env(redis_server.url, **env)
    web = PlainWeb(full_env, log_dir) if plain else Web(full_env, log_dir, "web")
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def fresh_user(prefix: str = "u") -> str:
    """A user id no other test uses, so its `user:` channel starts empty."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


__all__ = ["SECRET", "PlainWeb", "fresh_user", "running_web"]
