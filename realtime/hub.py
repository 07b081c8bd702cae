"""The relay hub: one broadcaster subscription per channel per node, ordered gap-free fan-out.

The hub is the only subscriber on its node, so it drives a broadcaster `BroadcastBackend`
itself, as `Broadcast` does, but without `Broadcast`'s queue and task per subscription: our
Redis backend hands it each message where it is read (`consume`); a stock backend is read
by one intake task (`next_published`). Either way a message goes to its channel at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broadcaster import BroadcastBackend, Event

from . import metrics, revocation
from .backend import CONTROL_CHANNEL, RESYNC, RedisBackend
from .errors import TaskcastError, TokenExpired, TokenRevoked, Unavailable
from .expiry import Expiry
from .protocol import WS_1011_INTERNAL_ERROR, WS_4401_UNAUTHORIZED, encode, error_frame
from .revocation import Revocations
from .session import Framing, Session, Subscription, Write
from .store import Message, Snapshot, Store, event_id
from .tokens import Principal

logger = logging.getLogger("taskcast.hub")

IDLE_GRACE = 10.0  # seconds a channel with no sessions stays subscribed (cheap re-joins)
REPLAY_PAGE = 256  # history entries read per round trip while a session catches up
READY_TIMEOUT = 5.0
INTAKE_BACKOFF = 0.5  # a stock backend whose `next_published` raised: try again after this
RELEASE_BATCH = 256  # idle channels unsubscribed per loop iteration
REVOCATION_TTL = 90000  # seconds a revocation stands (`TASKCAST_REVOCATION_TTL`)


@dataclass(eq=False, slots=True)
class _Group:
    """The direct sockets of a channel whose frames are the same bytes: one `framing`."""

    framing: Framing
    writes: dict[Session, Write] = field(default_factory=dict)
    held: list[bytes] = field(default_factory=list)  # framed, not yet written


@dataclass(eq=False, slots=True)
class _Channel:
    """This node's view of one channel: the last seq fanned out, and who listens."""

    name: str
    sessions: dict[Session, Subscription] = field(default_factory=dict)
    last_seq: int = 0
    # The event at `last_seq`, so a store that went back in time can be told apart from one
    # that did not: the frame this node fanned out (its id is read only when needed), or the
    # id the store named when the channel opened or restarted.
    last_frame: str = ""
    last_id: str = ""
    epoch: str = ""
    pending: dict[int, Message] = field(default_factory=dict)
    # A future, not an Event: one per channel, and an Event carries a deque (~0.6 KiB).
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    failed: BaseException | None = None
    filling: bool = False
    early: list[str] | None = None  # messages that came before the channel was ready
    reaper: asyncio.TimerHandle | None = None
    # The split, built at the channel's first event and then kept one session at a time:
    # the sockets each event is written to directly (live, caught up, nothing queued, open
    # and writable), each in the group of its framing (plain, or compressed with its window
    # bits), the other sessions, and those to look at again before the next event.
    # A direct session's `last` is brought up to date when it leaves `direct` (nothing else
    # reads a live subscription's `last`).
    direct: dict[Session, _Group] | None = None  # None: not built yet
    others: dict[Session, Subscription] | None = None
    stale: dict[Session, None] | None = None
    groups: dict[Framing, _Group] = field(default_factory=dict)

    def changed(self, session: Session) -> None:
        """`session` may belong on the other side of the split now: look before the next event."""
        if self.direct is not None:
            if self.stale is None:
                self.stale = {}
            self.stale[session] = None

    def split(self) -> tuple[dict[Session, _Group], dict[Session, Subscription]]:
        """The split as of now: built on first use, then only its stale sessions looked at.
        Frames held for the split as it was are written before it changes."""
        direct, others = self.direct, self.others
        if direct is not None and others is not None and not self.stale:
            return direct, others
        self.flush()
        if direct is None or others is None:  # not built: every session is to be placed
            direct, others = self.direct, self.others = {}, {}
            stale: Iterable[Session] = self.sessions
        else:
            stale = self.stale or ()
        self.stale = None
        for session in stale:
            self.lift(session)
            sub = self.sessions.get(session)
            if sub is None:
                continue
            write = framing = None
            if not sub.replaying and sub.last <= self.last_seq:
                write, framing = session.direct(), session.framing
            if write is None or framing is None:
                others[session] = sub
                continue
            group = self.groups.get(framing)
            if group is None:
                group = self.groups[framing] = _Group(framing)
            group.writes[session] = write
            direct[session] = group
        return direct, others

    def lift(self, session: Session) -> None:
        """Take `session` out of the split; if it was written to directly, it had every event."""
        if self.direct is None or self.others is None:
            return
        group = self.direct.pop(session, None)
        if group is not None:
            del group.writes[session]
            if not group.writes:
                group.held.clear()
                del self.groups[group.framing]
            sub = self.sessions.get(session)
            if sub is not None and sub.last < self.last_seq:
                sub.last = self.last_seq
        else:
            self.others.pop(session, None)
        if self.stale is not None:
            self.stale.pop(session, None)

    def flush(self) -> None:
        """Write the held frames to each direct socket, in one system call per socket."""
        failed = False
        for group in self.groups.values():
            held = group.held
            if not held:
                continue
            wire = b"".join(held)  # one frame: the same bytes object, not a copy
            held.clear()
            for write in group.writes.values():
                try:
                    write(wire)
                except Exception:  # noqa: BLE001 - a socket closed under us
                    failed = True
        if failed and self.direct:
            for session in self.direct:
                self.changed(session)

    def unsplit(self) -> None:
        """Forget the split (every subscription's `last` is being reset): built again."""
        self.flush()
        self.direct = self.others = self.stale = None
        self.groups.clear()


class Hub:
    """Relays events from broadcaster to sessions: each seq once, in order, to each subscriber."""

    def __init__(
        self,
        backend: BroadcastBackend,
        store: Store,
        *,
        idle_grace: float = IDLE_GRACE,
        revocation_ttl: int = REVOCATION_TTL,
    ) -> None:
        self.backend = backend  # connected by the caller, who also publishes through it
        self.store = store
        self.idle_grace = idle_grace
        self.expiry = Expiry(self._expired)  # every session's token deadline, one timer
        self.revocations = Revocations(revocation_ttl)
        self.channels: dict[str, _Channel] = {}
        self.sessions: set[Session] = set()
        self._per_user: dict[str, int] = {}
        self._intake: asyncio.Task[None] | None = None
        # Reaped channels wait here to be unsubscribed, a batch per loop iteration; a channel
        # joined again while it is `_leaving` first waits for the release to end.
        self._releasing: list[str] = []
        self._leaving: set[str] = set()
        self._releaser: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Hub:
        await self.backend.subscribe(CONTROL_CHANNEL)
        await self.backend.subscribe(revocation.CHANNEL)
        await self._load_revocations()  # after subscribing: nothing falls between the two
        if isinstance(self.backend, RedisBackend):
            # Ours hands each message over in the loop's read callback: no task switch.
            self.backend.consume(self._take)
        else:
            self._intake = asyncio.create_task(self._take_in(), name="taskcast-intake")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.expiry.close()
        if isinstance(self.backend, RedisBackend):
            self.backend.consume(None)
        tasks = [self._intake] if self._intake is not None else []
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.channels.clear()

    # -- sessions -------------------------------------------------------------------------

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        user = session.principal.user
        self._per_user[user] = self._per_user.get(user, 0) + 1
        self.expiry.track(session)

    def connections_of(self, user: str) -> int:
        """Open sessions of `user` on this node (the per-user connection cap reads this)."""
        return self._per_user.get(user, 0)

    async def remove(self, session: Session) -> None:
        """Forget a finished connection everywhere."""
        if session in self.sessions:
            self.sessions.discard(session)
            self.expiry.untrack(session)
            user = session.principal.user
            left = self._per_user.get(user, 1) - 1
            if left > 0:
                self._per_user[user] = left
            else:
                self._per_user.pop(user, None)
        for name in list(session.subs):
            self._leave(session, name)
        session.subs.clear()
        await session.stop()

    def reauthorize(self, session: Session, principal: Principal) -> None:
        """Give `session` a refreshed token's principal (same user): its deadline moves."""
        tracked = session in self.sessions
        if tracked:
            self.expiry.untrack(session)
        session.principal = principal
        if tracked:
            self.expiry.track(session)

    def end(self, session: Session, error: TaskcastError) -> None:
        """End a connection whose token no longer holds: no event after `error`, then 4401."""
        if session.closing:
            return
        for name in list(session.subs):
            self._leave(session, name)
        session.subs.clear()
        session.push(error_frame(error.code, error.message))
        session.close_soon(WS_4401_UNAUTHORIZED, error.code)

    def _expired(self, session: Session) -> None:
        if session in self.sessions and not session.closing:
            metrics.COUNTS.token_expired_closes += 1
            self.end(session, TokenExpired())

    async def revoke(self, user: str) -> int:
        """Refuse `user`'s tokens issued so far on every node, and end their connections now."""
        revoked_at = await revocation.store(self.store.redis, user, self.revocations.keep)
        self._revoked(user, revoked_at)
        await self.backend.publish(revocation.CHANNEL, revocation.message(user, revoked_at))
        return revoked_at

    def _revoked(self, user: str, revoked_at: int) -> None:
        self.revocations.note(user, revoked_at)
        if user not in self._per_user:
            return
        for session in [s for s in self.sessions if s.principal.user == user]:
            self._end_if_revoked(session)

    async def _load_revocations(self) -> None:
        """Read the standing revocations and end the connections they refuse."""
        try:
            await self.revocations.load(self.store.redis)
        except Exception as exc:  # noqa: BLE001 - read again when the pub/sub link returns
            logger.warning("reading revocations failed: %s", type(exc).__name__)
            return
        for session in list(self.sessions):
            self._end_if_revoked(session)

    def _end_if_revoked(self, session: Session) -> None:
        if not session.closing and self.revocations.refuses(session.principal):
            metrics.COUNTS.token_revoked_closes += 1
            self.end(session, TokenRevoked())

    async def subscribe(
        self, session: Session, name: str, since: int | None = None, epoch: str | None = None
    ) -> tuple[dict[str, Any], list[Message]]:
        """Join `name` for `session`; returns the `subscribed` frame and the first page of history.

        The caller pushes the frame, then `finish_subscribe` sends the replay, paced by the
        session's queue, until the session has caught up with the live stream.
        """
        channel = await self._channel(name)
        sub = Subscription(watcher=channel)
        channel.sessions[session] = sub
        session.subs[name] = sub
        channel.changed(session)
        # A client resuming on a channel only its owner reads is a witness of it too (a shared
        # topic channel is not: one client's claim must not restart everyone's stream).
        witness = None
        if since and epoch and not name.startswith("topic:"):
            witness = (epoch, since, "")
        try:
            snap = await self.store.read(name, since=since, limit=REPLAY_PAGE, witness=witness)
        except Exception:  # noqa: BLE001 - Redis away: the client is told, may retry
            self._leave(session, name)
            raise Unavailable("history is unreachable; retry") from None
        if snap.rewound:
            self._schedule_fill(channel)  # the node and its other sessions move to the new epoch
        frame: dict[str, Any] = {"type": "subscribed", "channel": name, "seq": snap.seq}
        frame["epoch"] = snap.epoch
        replay: list[Message] = []
        if since is None:
            sub.last = snap.seq
        elif snap.recoverable and (epoch is None or epoch == snap.epoch):
            frame["recovered"] = True
            replay = snap.entries
            sub.last = since
        else:
            frame["recovered"] = False
            sub.last = snap.seq
        if name.startswith("task:") and (since is None or not frame["recovered"]):
            frame["state"] = snap.state
        return frame, replay

    def finish_subscribe(self, session: Session, name: str, replay: list[Message]) -> None:
        """Send the first page of history; go live now if caught up, else keep replaying."""
        sub = session.subs.get(name)
        channel = self.channels.get(name)
        if sub is None or channel is None:
            return
        self._send_history(session, sub, replay)
        if not self._go_live(channel, session, sub):
            sub.replay = asyncio.create_task(self._replay(session, name, sub))

    @staticmethod
    def _send_history(session: Session, sub: Subscription, messages: list[Message]) -> None:
        """Queue history in order while the session has room; the replay task sends the rest."""
        for message in messages:
            if session.crowded:
                return
            if message.seq == sub.last + 1:
                sub.last = message.seq
                session.push(message.frame, message.coalesce_key)

    @staticmethod
    def _go_live(channel: _Channel, session: Session, sub: Subscription) -> bool:
        """Switch to live delivery once the session has everything the node has fanned out.

        No await separates the check from the switch, so no fanned-out seq falls between.
        """
        if sub.replaying and sub.last >= channel.last_seq:
            sub.replaying = False
            channel.changed(session)  # its fan-out may now write to it directly
        return not sub.replaying

    async def _replay(self, session: Session, name: str, sub: Subscription) -> None:
        """Page through history as the session's queue drains: a long catch-up never floods it."""
        try:
            while True:
                await session.room()
                if session.closed or session.subs.get(name) is not sub:
                    return
                snap = await self.store.read(name, since=sub.last, limit=REPLAY_PAGE)
                channel = self.channels.get(name)
                if channel is None or session.subs.get(name) is not sub:
                    return
                if snap.epoch != channel.epoch or snap.seq < channel.last_seq:
                    # The stream restarted under us, or Redis is behind what this node relayed
                    # (it came back older): the channel's own catch-up, a witness of it, moves
                    # it on and tells every session, this one included, once.
                    sub.replaying = False
                    channel.changed(session)
                    self._schedule_fill(channel)
                    return
                if snap.entries and snap.recoverable:
                    self._send_history(session, sub, snap.entries)
                elif sub.last < channel.last_seq:
                    # History lost what this session still needed (trimmed or expired):
                    # say so, then go on from the oldest event history still holds.
                    base = max(sub.last, snap.first_kept - 1)
                    self._notify_restart(session, sub, channel, snap, min(base, channel.last_seq))
                if self._go_live(channel, session, sub):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis away: the session resumes with since
            logger.warning("replay of %s failed: %s", name, type(exc).__name__)
            session.close_soon(WS_1011_INTERNAL_ERROR, "history unavailable; resume with since")

    def unsubscribe(self, session: Session, name: str) -> bool:
        if name not in session.subs:
            return False
        self._leave(session, name)
        del session.subs[name]
        return True

    def _leave(self, session: Session, name: str) -> None:
        channel = self.channels.get(name)
        if channel is None:
            return
        channel.lift(session)  # never written to again, nor kept alive by the split
        sub = channel.sessions.pop(session, None)
        if sub is not None and sub.replay is not None:
            sub.replay.cancel()
        if not channel.sessions and channel.reaper is None:
            loop = asyncio.get_running_loop()
            channel.reaper = loop.call_later(self.idle_grace, self._reap, channel)

    def _reap(self, channel: _Channel) -> None:
        channel.reaper = None
        if channel.sessions or self.channels.get(channel.name) is not channel:
            return
        del self.channels[channel.name]
        self._leaving.add(channel.name)
        self._releasing.append(channel.name)
        if self._releaser is None:
            self._releaser = asyncio.create_task(self._release(), name="taskcast-release")
            self._track(self._releaser)

    async def _release(self) -> None:
        """Unsubscribe the reaped channels, `RELEASE_BATCH` per loop iteration.

        A mass disconnect (a deploy, a network blip) makes thousands of channels idle at once
        and their grace ends in the same instant: a task and a write each would stall the node
        for hundreds of milliseconds, every subscriber's events waiting behind them.
        """
        try:
            while self._releasing:
                names, self._releasing = self._releasing, []
                for i, name in enumerate(names):
                    if i and i % RELEASE_BATCH == 0:
                        await asyncio.sleep(0)  # let the loop serve everyone else
                    try:
                        await self.backend.unsubscribe(name)
                    except Exception as exc:  # noqa: BLE001 - the next reap or resync retries
                        logger.warning("unsubscribe from %s failed: %s", name, type(exc).__name__)
                    self._leaving.discard(name)
        finally:
            self._releaser = None

    # -- channels -------------------------------------------------------------------------

    async def _channel(self, name: str) -> _Channel:
        channel = self.channels.get(name)
        if channel is None or channel.failed is not None:
            channel = _Channel(name)
            self.channels[name] = channel
            self._track(asyncio.create_task(self._open(channel), name=f"taskcast-open-{name}"))
        if channel.reaper is not None:
            channel.reaper.cancel()
            channel.reaper = None
        if not channel.ready.done():
            try:
                # shield: one subscriber giving up must not cancel the others' wait
                await asyncio.wait_for(asyncio.shield(channel.ready), READY_TIMEOUT)
            except TimeoutError:
                raise Unavailable("the event stream is unreachable; retry") from None
        if channel.failed is not None:
            raise Unavailable("the event stream is unreachable; retry")
        return channel

    async def _open(self, channel: _Channel) -> None:
        """Subscribe, then read where the channel stands; messages meanwhile wait in `early`."""
        try:
            releaser = self._releaser
            if channel.name in self._leaving and releaser is not None:
                # our own UNSUBSCRIBE must not land after this SUBSCRIBE
                with contextlib.suppress(Exception):
                    await asyncio.shield(releaser)
            await self.backend.subscribe(channel.name)
            snap = await self.store.read(channel.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a new subscriber will build a fresh channel
            logger.warning("channel %s failed: %s", channel.name, type(exc).__name__)
            channel.failed = exc
            channel.early = None
            channel.ready.set_result(None)
            return
        channel.last_seq, channel.epoch, channel.last_id = snap.seq, snap.epoch, snap.last_id
        channel.ready.set_result(None)
        early, channel.early = channel.early, None
        if early:
            self._relay(channel, early)

    async def _take_in(self) -> None:
        """The node's one reader of a stock backend: each message in arrival order."""
        next_published = self.backend.next_published
        while True:
            try:
                event: Event = await next_published()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a stock backend lost its link
                logger.warning("broadcast backend failed: %s", type(exc).__name__)
                await asyncio.sleep(INTAKE_BACKOFF)
                self._resync()
                continue
            try:
                self._take(event.channel, [event.message])
            except Exception as exc:  # noqa: BLE001 - as our backend does: the next one goes on
                logger.warning("relay failed: %s", type(exc).__name__)

    def _take(self, name: str, raws: list[str]) -> None:
        """Messages of one channel to it at once (or, on the control channel, a resync)."""
        channel = self.channels.get(name)
        if channel is None:
            if name == CONTROL_CHANNEL and RESYNC in raws:
                self._resync()
                # Revocations published while the link was down were missed: read them.
                self._track(asyncio.create_task(self._load_revocations()))
            elif name == revocation.CHANNEL:
                for raw in raws:
                    parsed = revocation.parse(raw)
                    if parsed is not None:
                        self._revoked(*parsed)
        elif not channel.ready.done():
            if channel.early is None:
                channel.early = []
            channel.early.extend(raws)
        elif channel.failed is None:
            self._relay(channel, raws)

    def _relay(self, channel: _Channel, raws: list[str]) -> None:
        """Fan out each next seq; hold a later one and catch up from history. The frames of
        messages read together go to each direct socket in one write."""
        try:
            for raw in raws:
                try:
                    message = Message.parse(raw)
                except ValueError:  # not ours: someone else PUBLISHed here
                    logger.warning("channel %s: unreadable message ignored", channel.name)
                    continue
                if message.epoch != channel.epoch:
                    self._schedule_fill(channel)
                elif message.seq == channel.last_seq + 1 and not channel.filling:
                    self._fanout(channel, message)
                    if channel.pending:
                        self._drain(channel)
                elif message.seq > channel.last_seq:
                    channel.pending[message.seq] = message
                    self._schedule_fill(channel)
        finally:
            channel.flush()

    def _resync(self) -> None:
        """Catch every channel up from history (the backend reconnected or dropped messages)."""
        for channel in list(self.channels.values()):
            self._schedule_fill(channel)

    def _fanout(self, channel: _Channel, message: Message) -> None:
        """Send one event to every live session of `channel`; the direct sockets' frames are
        held until `channel.flush()`, which the caller runs before it returns to the loop."""
        direct, others = channel.split()  # a push may mark a session stale, never move it
        seq = message.seq
        channel.last_seq = seq
        channel.last_frame = message.frame
        metrics.COUNTS.events_in += 1
        frame = message.frame
        if direct:
            for group in channel.groups.values():  # framed once for every socket of a group
                group.held.append(group.framing(frame))
            metrics.COUNTS.frames_out += len(direct)
        key = message.coalesce_key
        for session, sub in others.items():
            if sub.replaying:
                continue
            if seq > sub.last:
                sub.last = seq
                session.push(frame, key)
            elif seq == sub.last:  # the stream caught up with what its history had sent
                channel.changed(session)
        if message.emitted_ms:
            metrics.EVENT_AGE.observe(max(0.0, time.time() - message.emitted_ms / 1000))

    def _drain(self, channel: _Channel) -> None:
        pending = channel.pending
        while pending:
            for seq in [s for s in pending if s <= channel.last_seq]:
                del pending[seq]
            message = pending.pop(channel.last_seq + 1, None)
            if message is None:
                return
            self._fanout(channel, message)

    def _schedule_fill(self, channel: _Channel) -> None:
        if not channel.filling and channel.ready.done() and channel.failed is None:
            channel.filling = True
            self._track(asyncio.create_task(self._fill(channel)))

    async def _fill(self, channel: _Channel) -> None:
        """Catch `channel` up from history: after a gap, a reconnect, or an epoch change."""
        try:
            for _ in range(5):
                # This node is a witness of the channel: a store behind it gets a new epoch.
                last = event_id(channel.last_frame) if channel.last_frame else channel.last_id
                witness = (channel.epoch, channel.last_seq, last)
                snap = await self.store.read(channel.name, since=channel.last_seq, witness=witness)
                lost = not snap.recoverable and snap.seq > channel.last_seq
                if snap.epoch != channel.epoch or lost:
                    self._restart(channel, snap)
                    continue  # now deliver the new stream from what history holds
                for message in snap.entries:
                    if message.seq == channel.last_seq + 1:
                        self._fanout(channel, message)
                self._drain(channel)
                channel.flush()
                if not channel.pending:
                    return
        except Exception as exc:  # noqa: BLE001 - retried on the next message or resync
            logger.warning("catch-up of %s failed: %s", channel.name, type(exc).__name__)
        finally:
            channel.flush()
            channel.filling = False

    def _restart(self, channel: _Channel, snap: Snapshot) -> None:
        """The stream restarted (new epoch) or history lost what we had not relayed.

        Sessions are told (`recovered: false`), then get the stream from the oldest event
        history still holds: events published since Redis came back are not skipped.
        """
        logger.warning("channel %s: stream restarted or history gap; resetting", channel.name)
        channel.unsplit()
        base = max(0, snap.first_kept - 1)
        if snap.epoch == channel.epoch:
            base = max(base, channel.last_seq)
        channel.epoch = snap.epoch
        channel.last_seq = base
        channel.last_frame = ""
        channel.last_id = snap.last_id if base == snap.seq else ""
        for seq in [s for s in channel.pending if s <= base]:
            del channel.pending[seq]
        for session, sub in channel.sessions.items():
            self._notify_restart(session, sub, channel, snap, base)

    @staticmethod
    def _notify_restart(
        session: Session, sub: Subscription, channel: _Channel, snap: Snapshot, base: int
    ) -> None:
        """A `subscribed` frame with `recovered: false` (and state): what was lost is not coming.

        Its `seq` is `base`: the session gets every event after it.
        """
        frame: dict[str, Any] = {"type": "subscribed", "channel": channel.name, "seq": base}
        frame.update({"epoch": snap.epoch, "recovered": False})
        if channel.name.startswith("task:"):
            frame["state"] = snap.state
        sub.last = base
        session.push(encode(frame))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- stats ----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        subscriptions = sum(len(c.sessions) for c in self.channels.values())
        return {
            "connections": len(self.sessions),
            "subscriptions": subscriptions,
            "channels": len(self.channels),
        }
