"""Which event types and topics exist: the core's lifecycle types, and each app's own.

An app registers its types (a name and a pydantic model for `data`) and its topics at import
time, in a module that every process emitting or relaying them imports (its task modules, and
the web process through `TASKCAST_IMPORTS`). `emit` validates against this registry, the JSON
Schema export lists it, and `topic:` channels exist only for registered topics.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Iterable
from typing import Final

from pydantic import BaseModel

# Lowercase dotted names (`invoice.generated`); `task.` is the core's lifecycle family.
_TYPE_NAME: Final = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_TOPIC_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
RESERVED_PREFIX: Final = "task."
MAX_TYPE_CHARS: Final = 64

_models: dict[str, type[BaseModel]] = {}
_topic_of: dict[str, str | None] = {}
_topics: set[str] = set()
_lock = threading.Lock()


def _same(a: type[BaseModel], b: type[BaseModel]) -> bool:
    # A module imported twice (as `__main__` and by name) defines its model twice.
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_topic(name: str) -> None:
    """Make `topic:<name>` a channel (read with scope `topic:<name>`, `topic:*` or `admin`)."""
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name):
        raise ValueError(
            f"topic name {name!r} must be 1-64 of a-z, 0-9, '_', '.', '-' (starting a-z or 0-9)"
        )
    with _lock:
        _topics.add(name)


def register_event(name: str, model: type[BaseModel], *, topic: str | None = None) -> None:
    """Declare event type `name` whose `data` is `model`; published to `topic` by default.

    Registering the same type again with the same model is harmless; another model raises.
    """
    _register(name, model, topic, builtin=False)


def _register(name: str, model: type[BaseModel], topic: str | None, *, builtin: bool) -> None:
    if not isinstance(name, str) or len(name) > MAX_TYPE_CHARS or not _TYPE_NAME.fullmatch(name):
        raise ValueError(
            f"event type {name!r} must be lowercase dotted words like 'invoice.generated' "
            f"(at most {MAX_TYPE_CHARS} characters)"
        )
    if name.startswith(RESERVED_PREFIX) and not builtin:
        raise ValueError(f"event type {name!r}: the 'task.' types are taskcast's lifecycle")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"the model of {name!r} must be a pydantic BaseModel subclass")
    if topic is not None:
        register_topic(topic)
    with _lock:
        known = _models.get(name)
        if known is not None and (not _same(known, model) or _topic_of[name] != topic):
            raise ValueError(f"event type {name!r} is already registered with another model")
        _models[name] = model
        _topic_of[name] = topic


def model_of(name: str) -> type[BaseModel] | None:
    """The `data` model of a registered type, or None."""
    return _models.get(name)


def topic_of(name: str) -> str | None:
    """The default topic of a registered type (None: task and user channels only)."""
    return _topic_of.get(name)


def is_topic(name: str) -> bool:
    return name in _topics


def event_types() -> tuple[str, ...]:
    """Every registered type, lifecycle first, in registration order."""
    return tuple(_models)


def models() -> dict[str, type[BaseModel]]:
    """Every registered type and its `data` model (a copy)."""
    return dict(_models)


def topics() -> frozenset[str]:
    return frozenset(_topics)


def load(modules: Iterable[str]) -> None:
    """Import the modules that register an app's types and topics (`TASKCAST_IMPORTS`)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(
                f"TASKCAST_IMPORTS names {module!r}, which cannot be imported: {exc}"
            ) from exc
