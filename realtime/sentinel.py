"""Redis behind Sentinel: one URL form for every connection, each finding the current master.

`redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>[/<db>]` names the
Sentinels, the monitored service and the database; the login is the master's (Sentinels
without a password). redis-py clients use `redis.asyncio.sentinel`; raw connections
(`realtime/resp.py`) ask the Sentinels for the master on every connect and check its `ROLE`,
as Sentinel's client guidelines say, so a connection after a failover reaches the new master.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

import hiredis

SCHEME = "redis+sentinel"
ASK_TIMEOUT = 1.0  # per Sentinel: one that does not answer in time is skipped


@dataclass(frozen=True, slots=True)
class SentinelSet:
    """What a `redis+sentinel://` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None

    def master_url(self, host: str, port: int) -> str:
        """A plain `redis://` URL for the master at `host:port`, with this set's login and db."""
        user = quote(self.username or "", safe="")
        login = f"{user}:{quote(self.password, safe='')}@" if self.password is not None else ""
        if not login and user:
            login = f"{user}@"
        netloc = f"[{host}]" if ":" in host else host
        return f"redis://{login}{netloc}:{port}/{self.db}"


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme.lower() == SCHEME


@lru_cache(maxsize=16)
def parse(url: str) -> SentinelSet:
    """Read a `redis+sentinel://` URL; ValueError naming what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    login, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if login:
        user, has_password, secret = login.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{SCHEME}:// needs host:port for every Sentinel")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{SCHEME}:// needs the service name, then the database: /mymaster/0")
    db = int(path[1]) if len(path) == 2 else 0
    return SentinelSet(tuple(sentinels), unquote(path[0]), db, username, password)


async def _ask(host: str, port: int, *args: str) -> Any:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(bytes(hiredis.pack_command(cast(Any, args))))
        parser = hiredis.Reader(encoding="utf-8")
        while (reply := parser.gets()) is False:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the Sentinel closed the connection")
            parser.feed(data)
        return reply
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def master_address(where: SentinelSet) -> tuple[str, int]:
    """The master's address as the first Sentinel that knows it says; ConnectionError if none."""
    for host, port in where.sentinels:
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                reply = await _ask(host, port, "SENTINEL", "get-master-addr-by-name", where.service)
        except (OSError, TimeoutError, ConnectionError, hiredis.ProtocolError):
            continue
        if isinstance(reply, list) and len(reply) == 2:
            return str(reply[0]), int(reply[1])
    raise ConnectionError(f"no Sentinel named a master for {where.service!r}")


def redis_py_options(where: SentinelSet) -> dict[str, Any]:
    """Keyword arguments of the master's connections for `redis.asyncio.sentinel`."""
    return {"db": where.db, "username": where.username, "password": where.password}
