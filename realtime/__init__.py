"""taskcast's core: events, channels, store, publisher, hub and client, with no web framework."""

from .channels import Channel, may_subscribe, parse
from .client import Client, Subscription
from .emitter import Emitter, emit, flush
from .errors import TaskcastError
from .events import TERMINAL_TYPES, json_schema
from .hub import Hub
from .publisher import Publisher
from .registry import event_types, register_event, register_topic
from .session import Session
from .settings import Settings, get_settings
from .store import Store
from .tokens import Principal

__all__ = [
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
    "event_types",
    "flush",
    "get_settings",
    "json_schema",
    "may_subscribe",
    "parse",
    "register_event",
    "register_topic",
]
