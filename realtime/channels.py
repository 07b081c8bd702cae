"""Channel names (`task:`, `user:`, `topic:`, and the app's own) and the built-in access rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from . import registry
from .errors import BadChannel

# Ids are restricted so a channel name is safe in Redis keys, JSON and log lines.
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
# Names an app's policy may admit beyond the built-in kinds (`board:42`, `tenant:7:alerts`):
# the same safe characters, plus `:` as a separator.
_APP_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,139}")
Kind = Literal["task", "user", "topic", "app"]


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name."""

    kind: Kind
    id: str

    @property
    def name(self) -> str:
        return self.id if self.kind == "app" else f"{self.kind}:{self.id}"

    def __str__(self) -> str:
        return self.name


def valid_id(value: str) -> bool:
    """True for an id usable in a channel name (task, user or order id)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def parse(name: str, app_names: bool = False) -> Channel:
    """Parse `kind:id`, raising `BadChannel` for anything the contract does not name.

    With `app_names` (an app's policy decides access) any topic with a well-formed name and
    any other safe name (`board:42`) is accepted too; `task:` and `user:` stay strict.
    """
    if not isinstance(name, str) or len(name) > 140:
        raise BadChannel("channel must be a string like 'task:<id>'")
    kind, sep, ident = name.partition(":")
    if sep and kind in ("task", "user"):
        if not valid_id(ident):
            raise BadChannel(f"malformed {kind} id")
        return Channel(kind, ident)  # type: ignore[arg-type]
    if sep and kind == "topic" and (registry.is_topic(ident) or (app_names and valid_id(ident))):
        return Channel("topic", ident)
    if not app_names:
        if kind == "topic" and sep:  # the built-in topics and each app's own
            topics = ", ".join(sorted(registry.topics()))
            raise BadChannel(f"unknown topic; expected one of {topics}")
        raise BadChannel("channel must start with 'task:', 'user:' or 'topic:'")
    if kind == "topic" or _APP_NAME.fullmatch(name) is None:
        raise BadChannel("malformed channel name")
    return Channel("app", name)


def task_channel(task_id: str) -> str:
    return f"task:{task_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


def topic_channel(topic: str) -> str:
    return f"topic:{topic}"


def may_read_topic(scopes: frozenset[str], topic: str) -> bool:
    """Scope rule for `topic:` channels: `admin`, `topic:*`, `topic:<name>`; system for all."""
    if topic == "system" or "admin" in scopes or "topic:*" in scopes:
        return True
    return f"topic:{topic}" in scopes


def may_subscribe(
    channel: Channel, user: str, scopes: frozenset[str], task_owner: str | None
) -> bool:
    """The contract's table; `task_owner` is a task channel's recorded owner (None: unknown)."""
    if "admin" in scopes:
        return True
    if channel.kind == "user":
        return channel.id == user
    if channel.kind == "task":
        return task_owner is not None and task_owner == user
    if channel.kind == "topic":
        return may_read_topic(scopes, channel.id)
    return False  # an app's own channel: only its policy (or `admin`) admits anyone
