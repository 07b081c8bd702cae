"""An app's own authorization policies, named by tests in `TASKCAST_AUTHORIZE`."""

from __future__ import annotations

from taskcast.realtime import Principal


def authorize(principal: Principal, channel: str) -> bool | None:
    """Boards by the token's `boards` claim; `support` reads every task; the rest as built in."""
    if channel.startswith("board:"):
        boards = principal.claims.get("boards", [])
        return isinstance(boards, list) and channel.removeprefix("board:") in boards
    if channel.startswith("task:") and "support" in principal.scopes:
        return True
    if channel == "topic:orders" and principal.claims.get("suspended"):
        return False
    return None


async def authorize_async(principal: Principal, channel: str) -> bool | None:
    """The same policy as a coroutine function (it might ask a database)."""
    return authorize(principal, channel)


def broken(principal: Principal, channel: str) -> bool | None:
    """A policy with a bug: every subscription it is asked about is refused."""
    raise RuntimeError("the app's bug")
