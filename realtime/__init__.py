"""taskcast's core: events, channels, store, publisher, hub and client, with no web framework."""

from .channels import Channel, may_subscribe, parse
from .client import Client, Subscription
from .emitter import Emitter, emit, flush
from .errors import TaskcastError
from .events import EVENT_TYPES, TERMINAL_TYPES, json_schema
from .hub import Hub
from .publisher import Publisher
from .session import Session
from .settings import Settings, get_settings
from .store import Store
from .tokens import Principal

__all__ = [
    "EVENT_TYPES",
    "TERMINAL_TYPES",
    "Channel",
    "Client",
    "Emitter",
    "Hub",
    "Principal",
    "Publisher",
    "Session",
    "Settings",
    "Store",
    "Subscription",
    "TaskcastError",
    "emit",
    "flush",
    "get_settings",
    "json_schema",
    "may_subscribe",
    "parse",
]
