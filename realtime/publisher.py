"""Store-then-publish: the async path every event takes into Redis and broadcaster."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NoReturn, Protocol

from . import metrics, registry
from .channels import valid_id
from .events import TASK_TYPES, encode_event, make_event, validate_data
from .eventsize import MAX_EVENT_SETTING, refuse
from .store import Store, Stored


def topic_for(type_: str, topic: str | None, user_id: str | None = None) -> str | None:
    """The topic an event goes to (the one given, else its type's); task events have none.

    A `notification` addressed to a user is personal: it goes to the topic only if asked.
    A type registered without a topic goes to a topic only when one is given.
    """
    if type_ in TASK_TYPES:
        if topic is not None:
            raise ValueError("task lifecycle events are not published to topics")
        return None
    if registry.model_of(type_) is None:
        raise ValueError(f"unknown event type {type_!r}")
    if topic is None and type_ == "notification" and user_id is not None:
        return None
    chosen = topic if topic is not None else registry.topic_of(type_)
    if chosen is not None and not registry.is_topic(chosen):
        raise ValueError(
            f"unknown topic {chosen!r}; expected one of {', '.join(sorted(registry.topics()))} "
            "(an app's own topics: taskcast.register_topic)"
        )
    return chosen


def check_targets(task_id: str | None, user_id: str | None) -> None:
    """Ids must be usable in channel names; a bad one is the caller's bug, said at once."""
    if task_id is not None and not valid_id(task_id):
        raise ValueError(f"malformed task_id {task_id!r}")
    if user_id is not None and not valid_id(user_id):
        raise ValueError(f"malformed user_id {user_id!r}")


def root_of(root_id: str | None, task_id: str | None) -> str | None:
    """`root_id` as the envelope carries it: only for a task that is not its own root."""
    if root_id is None or root_id == task_id:
        return None
    if not valid_id(root_id):
        raise ValueError(f"malformed root_id {root_id!r}")
    return root_id


def prepare(
    type_: str,
    data: dict[str, Any],
    task_id: str | None,
    user_id: str | None,
    topic: str | None,
) -> tuple[dict[str, Any], str | None]:
    """Check an event's arguments (ValueError naming the problem): its clean data and topic."""
    check_targets(task_id, user_id)
    clean = validate_data(type_, data)  # first: an unknown type is named with the known ones
    return clean, topic_for(type_, topic, user_id)


class Publishes(Protocol):
    """What publishing needs: a `Broadcast` or a broadcaster backend (the node holds one)."""

    async def publish(self, channel: str, message: Any) -> None: ...


class Publisher:
    """Stores each event (seq, history, state) and then publishes it on every target channel.

    When the store publishes itself (broadcaster on the store's own Redis), storing is
    publishing: one atomic step, so pub/sub carries each channel in seq order.
    """

    def __init__(
        self,
        store: Store,
        broadcast: Publishes,
        *,
        max_event_bytes: int = 64 * 1024,
        limited_by: str = MAX_EVENT_SETTING,
    ) -> None:
        self.store = store
        self.broadcast = broadcast
        self.max_event_bytes = max_event_bytes
        self.limited_by = limited_by  # what sets `max_event_bytes`, named in a refusal

    async def emit(
        self,
        type_: str,
        *,
        data: dict[str, Any],
        task_id: str | None = None,
        user_id: str | None = None,
        topic: str | None = None,
        root_id: str | None = None,
    ) -> Stored:
        """Validate, store and publish one event; raises on transport errors (callers retry).

        An event over `max_event_bytes` raises `EventTooLarge`; nothing is stored.
        """
        clean, chosen = prepare(type_, data, task_id, user_id, topic)
        root = root_of(root_id, task_id)
        event = make_event(
            type_, clean, task_id=task_id, user_id=user_id, validated=True, root_id=root
        )
        return await self.publish(event, chosen)

    async def queued(
        self, task_id: str, owner: str, name: str, *, broker_checked: bool = True
    ) -> None:
        """Record a task's owner, then its `task.queued`: done before its message is sent, so
        its owner may subscribe at once and no worker starts a task nobody owns."""
        await self.store.create_task(task_id, owner, name, broker_checked=broker_checked)
        await self.emit("task.queued", data={"name": name}, task_id=task_id, user_id=owner)

    async def publish(self, event: dict[str, Any], topic: str | None) -> Stored:
        """Store and publish one built event, refusing it (`EventTooLarge`) over the limit."""
        encoded = encode_event(event)
        if len(encoded) > self.max_event_bytes:
            await self._refuse(event, len(encoded))
        stored = await self.store.append(event, encoded, topic)
        await self._broadcast(stored.messages)
        metrics.COUNTS.emitted += 1
        return stored

    async def publish_many(
        self, batch: list[tuple[dict[str, Any], str | None]], mark: tuple[str, int] | None = None
    ) -> list[Stored]:
        """Store a batch in one round trip, then publish it (pipelined by our backend).

        `mark`: see `Store.append_many` (an emitter's in-order events). An event over
        `max_event_bytes` raises `EventTooLarge` and nothing of the batch is stored.
        """
        encoded = [(e, encode_event(e), t) for e, t in batch]
        for event, raw, _ in encoded:
            if len(raw) > self.max_event_bytes:
                await self._refuse(event, len(raw))
        return await self.publish_encoded(encoded, mark)

    async def publish_encoded(
        self,
        batch: list[tuple[dict[str, Any], bytes, str | None]],
        mark: tuple[str, int] | None = None,
    ) -> list[Stored]:
        """`publish_many` of events already encoded, and checked against the limit by the
        caller (the emitter measures each where it is emitted)."""
        results = await self.store.append_many(batch, mark)
        await self._broadcast([m for stored in results for m in stored.messages])
        metrics.COUNTS.emitted += len(batch)
        return results

    async def _refuse(self, event: dict[str, Any], size: int) -> NoReturn:
        """Count (best effort) and raise `EventTooLarge` for an event over the limit."""
        with contextlib.suppress(Exception):  # Redis away: the refusal itself still stands
            await self.store.count("events_too_large")
        raise refuse(event["type"], size, self.max_event_bytes, event["task_id"], self.limited_by)

    async def _broadcast(self, messages: list[tuple[str, str]]) -> None:
        if not messages or self.store.publishes:
            return
        publish = self.broadcast.publish
        try:
            await asyncio.gather(*(publish(channel, message) for channel, message in messages))
        except Exception:
            metrics.COUNTS.publish_errors += 1
            raise
