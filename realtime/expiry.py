"""When each open connection's token runs out: one timer per node, not one per connection.

Connections are kept in buckets by the second their token stops being valid (`exp` plus the
verification leeway); one loop timer waits for the earliest bucket. Idle, the node holds one
timer whatever the number of connections, and wakes only in a second some token expires in.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable

from .session import Session
from .tokens import LEEWAY_SECONDS

logger = logging.getLogger("taskcast.expiry")
BATCH = 256  # expired sessions ended per loop iteration


def deadline(expires_at: int) -> int:
    """The first whole second at which a token with this `exp` is refused (PyJWT's rule)."""
    return expires_at + LEEWAY_SECONDS


class Expiry:
    """Calls `expired(session)` once its token's deadline has come (as the loop allows)."""

    __slots__ = ("_armed", "_due", "_expired", "_handle", "_order")

    def __init__(self, expired: Callable[[Session], None]) -> None:
        self._expired = expired
        self._due: dict[int, dict[Session, None]] = {}  # deadline second -> its sessions
        self._order: list[int] = []  # the seconds of `_due`, a heap (emptied ones linger)
        self._handle: asyncio.Handle | None = None
        self._armed: int | None = None  # the second `_handle` fires for

    def track(self, session: Session) -> None:
        """Watch `session` for its principal's `exp` (call `untrack` before it changes)."""
        expires_at = session.principal.expires_at
        if expires_at is None:
            return
        second = deadline(expires_at)
        due = self._due.get(second)
        if due is None:
            due = self._due[second] = {}
            heapq.heappush(self._order, second)
        due[session] = None
        if self._armed is None or second < self._armed:
            self._arm()

    def untrack(self, session: Session) -> None:
        """Stop watching `session` (it closed, or its token is being replaced)."""
        expires_at = session.principal.expires_at
        if expires_at is None:
            return
        second = deadline(expires_at)
        due = self._due.get(second)
        if due is not None:
            due.pop(session, None)
            if not due:
                del self._due[second]

    def close(self) -> None:
        """Cancel the timer (the node is stopping)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._armed = None

    def _arm(self) -> None:
        """Wait for the earliest second that still has sessions; forget emptied ones."""
        order = self._order
        while order and order[0] not in self._due:
            heapq.heappop(order)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self._armed = None
        if not order:
            return
        second = order[0]
        loop = asyncio.get_running_loop()
        # Wall-clock seconds to the loop's monotonic clock: drift over a token's life is nil.
        when = loop.time() + max(0.0, second - time.time())
        self._handle = loop.call_at(when, self._fire)
        self._armed = second

    def _fire(self) -> None:
        """End the sessions whose deadline has passed, `BATCH` per loop iteration: tokens
        minted together (a reconnect storm) expire together, and every other socket on the
        node waits while a step runs."""
        self._handle = self._armed = None
        now = time.time()
        order = self._order
        budget = BATCH
        while order and order[0] <= now:
            second = order[0]
            due = self._due.get(second)
            if due is None:
                heapq.heappop(order)
                continue
            while due and budget:
                session = next(iter(due))
                del due[session]
                budget -= 1
                try:
                    self._expired(session)
                except Exception as exc:  # noqa: BLE001 - the others of this second go on
                    logger.warning("ending an expired connection failed: %s", type(exc).__name__)
            if due:  # the budget ran out: the rest in the next loop iteration
                loop = asyncio.get_running_loop()
                self._handle = loop.call_soon(self._fire)
                self._armed = second
                return
            self._due.pop(second, None)
            heapq.heappop(order)
        self._arm()

    def __len__(self) -> int:
        return sum(len(due) for due in self._due.values())
