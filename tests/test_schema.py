"""`taskcast schema`: the JSON Schema client types are generated from."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from taskcast.realtime import registry
from taskcast.realtime.cli import app


@pytest.mark.timeout(30)
def test_schema_names_every_event_frame_and_op() -> None:
    """The printed schema has one typed envelope per event type, and every frame and op."""
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    defs = schema["$defs"]
    mapping = defs["TaskcastEvent"]["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(registry.event_types())
    progress = defs[mapping["task.progress"].rsplit("/", 1)[1]]
    assert progress["properties"]["data"] == {"$ref": "#/$defs/TaskProgress"}
    frames = {
        defs[ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["const"]
        for ref in defs["ServerFrame"]["oneOf"]
    }
    assert frames == {
        "welcome",
        "subscribed",
        "unsubscribed",
        "event",
        "pong",
        "refreshed",
        "error",
    }
    ops = {
        defs[ref["$ref"].rsplit("/", 1)[1]]["properties"]["op"]["const"]
        for ref in defs["ClientOp"]["oneOf"]
    }
    assert ops == {"subscribe", "unsubscribe", "ping", "refresh"}
    assert defs["Subscribed"]["properties"]["state"]["anyOf"][0] == {"$ref": "#/$defs/TaskState"}
