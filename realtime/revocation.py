"""Revoked users: every node refuses their tokens issued up to the revocation, and ends
their open connections at once.

A revocation is one member of the sorted set `tc:revoked` (the user, scored by the unix second
of the revocation), kept for `TASKCAST_REVOCATION_TTL`, and a message on the pub/sub channel
`tc:revocations` that every node's hub listens to. Each node keeps the set in memory, read
whole at start-up and after its pub/sub link comes back (it may have missed messages), and fed
by the channel in between: checking a token costs no round trip to Redis.
"""

from __future__ import annotations

import time
from typing import cast

import orjson
from redis.asyncio import Redis

from .tokens import Principal

KEY = "tc:revoked"
CHANNEL = "tc:revocations"


def message(user: str, revoked_at: int) -> str:
    """The pub/sub message that tells every node of one revocation."""
    return orjson.dumps({"user": user, "revoked_at": revoked_at}).decode()


def parse(raw: str) -> tuple[str, int] | None:
    """`(user, revoked_at)` of a revocation message; None if it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    user, at = obj.get("user"), obj.get("revoked_at")
    if not isinstance(user, str) or not isinstance(at, int) or isinstance(at, bool):
        return None
    return user, at


async def store(redis: Redis, user: str, keep: int) -> int:
    """Record that `user`'s tokens issued up to now are refused; the revocation second."""
    revoked_at = int(time.time())
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(KEY, {user: revoked_at})
        pipe.zremrangebyscore(KEY, "-inf", revoked_at - keep)
        pipe.expire(KEY, keep)
        await pipe.execute()
    return revoked_at


class Revocations:
    """This node's copy of the standing revocations: user -> revocation second."""

    __slots__ = ("_at", "keep")

    def __init__(self, keep: int) -> None:
        self.keep = keep  # seconds a revocation stands
        self._at: dict[str, int] = {}

    def note(self, user: str, revoked_at: int) -> None:
        if revoked_at > self._at.get(user, -1):
            self._at[user] = revoked_at

    async def load(self, redis: Redis) -> None:
        """Read every standing revocation (start-up, and after the pub/sub link came back)."""
        floor = int(time.time()) - self.keep
        standing = await redis.zrangebyscore(KEY, floor, "+inf", withscores=True)
        for user, score in cast("list[tuple[bytes | str, float]]", standing):
            name = user.decode() if isinstance(user, bytes) else user
            self.note(name, int(score))
        # Lapsed revocations of users never seen again would otherwise stay forever.
        self._at = {user: at for user, at in self._at.items() if at > floor}

    def refuses(self, principal: Principal) -> bool:
        """True if a revocation stands for the principal's token: issued in or before the
        revocation's second (`iat` has whole seconds), or with no `iat` at all."""
        revoked_at = self._at.get(principal.user)
        if revoked_at is None:
            return False
        if revoked_at <= time.time() - self.keep:
            del self._at[principal.user]
            return False
        return principal.issued_at is None or principal.issued_at <= revoked_at

    def __len__(self) -> int:
        return len(self._at)
