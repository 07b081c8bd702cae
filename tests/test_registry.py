"""An app's own event types and topics: registered once, validated at `emit`, exported."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from taskcast.realtime import Emitter, json_schema, registry
from taskcast.realtime.channels import parse
from taskcast.realtime.errors import BadChannel
from taskcast.realtime.publisher import prepare

from . import adopter_events  # noqa: F401 - registers `invoice.generated` on `invoices`


@pytest.fixture
def emitter() -> Emitter:
    """An emitter nothing is sent from: validation happens before anything is buffered."""
    return Emitter("redis://127.0.0.1:1/0")


def test_an_apps_type_is_validated_like_a_builtin_one(emitter: Emitter) -> None:
    """`emit` of a registered type with malformed data raises ValueError naming the type and
    the field; good data passes the same checks, headed for the type's topic."""
    with pytest.raises(ValueError, match=r"invalid data for 'invoice\.generated'.*amount_cents"):
        emitter.emit("invoice.generated", data={"invoice_id": "inv-1", "amount_cents": -5})
    with pytest.raises(ValueError, match="colour"):
        emitter.emit(
            "invoice.generated", data={"invoice_id": "i", "amount_cents": 1, "colour": "red"}
        )
    good = {"invoice_id": "inv-1", "amount_cents": 5}
    assert prepare("invoice.generated", good, None, None, None) == (good, "invoices")


def test_an_unregistered_type_or_topic_is_refused_at_emit(emitter: Emitter) -> None:
    """An unknown type names the registered ones and how to add one; so does an unknown topic."""
    with pytest.raises(ValueError, match=r"unknown event type 'invoice\.paid'.*register_event"):
        emitter.emit("invoice.paid", data={})
    with pytest.raises(ValueError, match=r"unknown topic 'billing'.*register_topic"):
        emitter.emit(
            "invoice.generated", data={"invoice_id": "i", "amount_cents": 1}, topic="billing"
        )


def test_registered_topics_are_channels() -> None:
    """`topic:invoices` parses once registered; a topic nobody registered is a bad channel."""
    assert parse("topic:invoices").id == "invoices"
    with pytest.raises(BadChannel, match="unknown topic"):
        parse("topic:billing")


def test_the_schema_export_includes_an_apps_types() -> None:
    """`json_schema()` holds the app's model beside the built-in ones, and the envelope's
    optional `root_id`."""
    schema = json_schema()
    invoice = schema["data"]["invoice.generated"]
    assert set(invoice["properties"]) == {"invoice_id", "amount_cents"}
    assert {"task.progress", "notification"} <= set(schema["data"])
    assert "root_id" in schema["envelope"]["properties"]


class Other(BaseModel):
    value: int


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("task.exploded", "lifecycle"),
        ("Invoice Generated", "lowercase dotted"),
        ("invoice.generated", "already registered"),
    ],
)
def test_bad_registrations_are_refused(name: str, problem: str) -> None:
    """A `task.` name, a malformed name, or a second model for a taken name raise ValueError."""
    with pytest.raises(ValueError, match=problem):
        registry.register_event(name, Other)
    assert registry.model_of("task.exploded") is None


def test_registering_the_same_type_again_is_harmless() -> None:
    """A module imported twice registers its types twice without error."""
    model = registry.model_of("invoice.generated")
    assert model is not None
    registry.register_event("invoice.generated", model, topic="invoices")
    assert registry.topic_of("invoice.generated") == "invoices"


def test_a_malformed_topic_name_is_refused() -> None:
    """Topic names are short lowercase words, usable in channel names and scopes."""
    with pytest.raises(ValueError, match="topic name"):
        registry.register_topic("Bad Topic!")
