"""Channel names and the contract's table of who may subscribe to each."""

from __future__ import annotations

import pytest

from taskcast.realtime.channels import Channel, may_subscribe, parse
from taskcast.realtime.errors import BadChannel

TOPICS = ["orders", "clients", "inventory", "notifications", "system"]


@pytest.mark.parametrize(
    ("name", "kind", "ident"),
    [
        ("task:3f2a9c", "task", "3f2a9c"),
        ("task:a1b2-c3d4_e5.f6", "task", "a1b2-c3d4_e5.f6"),
        ("user:alice", "user", "alice"),
        ("user:ada@example.com", "user", "ada@example.com"),
        *[(f"topic:{t}", "topic", t) for t in TOPICS],
    ],
)
def test_valid_names_parse(name: str, kind: str, ident: str) -> None:
    """task:, user: and the five topic: channels parse to their kind and id."""
    channel = parse(name)
    assert (channel.kind, channel.id) == (kind, ident)
    assert channel.name == str(channel) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "task",
        "task:",
        "user:",
        "topic:",
        "topic:weather",
        "topic:Orders",
        "queue:x",
        "TASK:abc",
        "task:a b",
        "task:-leading-dash",
        "user:al/ice",
        "user:a\nb",
        "task:" + "x" * 129,
        "x" * 200,
        5,
        None,
    ],
)
def test_bad_names_raise_bad_channel(name: object) -> None:
    """Anything the contract does not name raises BadChannel (code bad_channel)."""
    with pytest.raises(BadChannel) as info:
        parse(name)  # type: ignore[arg-type]
    assert info.value.code == "bad_channel"


def test_task_channel_is_for_its_owner_and_admin() -> None:
    """task:<id> may be read by the user who submitted it and by admin only."""
    task = Channel("task", "t1")
    assert may_subscribe(task, "alice", frozenset(), task_owner="alice")
    assert not may_subscribe(task, "bob", frozenset(), task_owner="alice")
    assert not may_subscribe(task, "bob", frozenset({"topic:*"}), task_owner="alice")
    assert may_subscribe(task, "bob", frozenset({"admin"}), task_owner="alice")
    # A task nobody recorded belongs to nobody: only admin may watch it.
    assert not may_subscribe(task, "alice", frozenset(), task_owner=None)
    assert may_subscribe(task, "root", frozenset({"admin"}), task_owner=None)


def test_user_channel_is_for_that_user_and_admin() -> None:
    """user:<id> may be read by that user only, and by admin."""
    assert may_subscribe(Channel("user", "alice"), "alice", frozenset(), None)
    assert not may_subscribe(Channel("user", "alice"), "bob", frozenset(), None)
    assert not may_subscribe(Channel("user", "alice"), "bob", frozenset({"topic:*"}), None)
    assert may_subscribe(Channel("user", "alice"), "bob", frozenset({"admin"}), None)


@pytest.mark.parametrize("topic", [t for t in TOPICS if t != "system"])
def test_topic_channels_need_a_scope(topic: str) -> None:
    """topic:<name> needs topic:<name>, topic:* or admin; another topic's scope is not enough."""
    channel = Channel("topic", topic)
    other = next(t for t in TOPICS if t not in (topic, "system"))
    assert not may_subscribe(channel, "alice", frozenset(), None)
    assert not may_subscribe(channel, "alice", frozenset({f"topic:{other}"}), None)
    assert not may_subscribe(channel, "alice", frozenset({topic}), None)
    assert may_subscribe(channel, "alice", frozenset({f"topic:{topic}"}), None)
    assert may_subscribe(channel, "alice", frozenset({"topic:*"}), None)
    assert may_subscribe(channel, "alice", frozenset({"admin"}), None)


def test_topic_system_is_open_to_any_signed_in_user() -> None:
    """topic:system may be read by any signed-in user without scopes."""
    assert may_subscribe(Channel("topic", "system"), "anyone", frozenset(), None)
