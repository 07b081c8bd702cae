"""Redis clients with the timeouts and retries taskcast relies on (redis-py 8 defaults differ)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

RETRIES = 3


def redis_client(url: str, **options: Any) -> Redis:
    """An asyncio client that reconnects on a dropped connection (e.g. after a Redis restart).

    Retrying writes is safe: every event carries its id and the store deduplicates by it.
    """
    defaults: dict[str, Any] = {
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES),
        "retry_on_error": [ConnectionError, TimeoutError, OSError],
    }
    defaults.update(options)
    return Redis.from_url(url, **defaults)
