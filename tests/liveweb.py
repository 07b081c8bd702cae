"""A live web node shared by one test module: attacker tests probe a real uvicorn from outside.

Starting uvicorn costs a second or two, so a module starts one and its tests isolate
themselves with fresh user ids instead of flushing Redis under the running process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import SECRET, RedisServer, Web, base_env


@contextmanager
def running_web(redis_server: RedisServer, log_dir: Path, **env: str) -> Iterator[Web]:
    """One uvicorn `web` process against the session's private Redis, stopped on exit."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a fault test may have left it down
    web = Web(base_env(redis_server.url, **env), log_dir, "web")
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def fresh_user(prefix: str = "u") -> str:
    """A user id no other test uses, so its `user:` channel starts empty."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


__all__ = ["SECRET", "fresh_user", "running_web"]
