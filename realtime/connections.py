"""Redis clients with the timeouts and retries taskcast relies on (redis-py 8 defaults differ)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

from . import sentinel

RETRIES = 3
MAX_CONNECTIONS = 64
POOL_TIMEOUT = 10.0  # a burst (e.g. every channel catching up at once) waits for a connection


def redis_client(url: str, **options: Any) -> Redis:
    """An asyncio client that reconnects on a dropped connection (e.g. after a Redis restart).

    Retrying writes is safe: every event carries its id and the store deduplicates by it.
    """
    defaults: dict[str, Any] = {
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES),
        "retry_on_error": [ConnectionError, TimeoutError, OSError],
        "max_connections": MAX_CONNECTIONS,
    }
    defaults.update(options)
    if sentinel.is_sentinel(url):
        where = sentinel.parse(url)
        manager = Sentinel(  # type: ignore[no-untyped-call]
            list(where.sentinels),
            sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
        )
        # Every new connection asks the Sentinels for the master; one that meets a demoted
        # master (READONLY) is dropped and retried: after a failover, the new master.
        client: Redis = manager.master_for(
            where.service,
            redis_class=_SentinelRedis,
            connection_pool_class=_BlockingSentinelPool,
            timeout=POOL_TIMEOUT,
            **sentinel.redis_py_options(where),
            **defaults,
        )
        return client
    # redis-py 8's default pool raises MaxConnectionsError at its cap; this one waits.
    pool = BlockingConnectionPool.from_url(url, timeout=POOL_TIMEOUT, **defaults)
    return Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


class _SentinelRedis(Redis):
    """A client of the Sentinels' master whose `aclose` also closes its Sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool that, like the plain one above, waits at its cap instead of raising."""
