"""Check robot-protocol frames against the published JSON Schemas (docs/protocol/v1/).

`check_server_frames` (autouse, in conftest) hooks both ways a test receives frames from the robot
route, channels' WebsocketCommunicator and a `websockets` client (the library's too), so every frame
the server sends in the suite is validated without any test asking for it.
"""

from __future__ import annotations

import json

import jsonschema_rs
import pytest
from channels.testing import WebsocketCommunicator
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from websockets.asyncio.client import ClientConnection

from telemetry.protocol import SCHEMA_NAMES, SERVER_SENDS, schema_path

ROBOT_ROUTE = "/api/telemetry/ws/"


def _schemas() -> dict[str, dict]:
    # Each file with its location as $id, so its relative $refs resolve as they do next to the files.
    return {
        name: {**json.loads(schema_path(name).read_text()), "$id": schema_path(name).as_uri()} for name in SCHEMA_NAMES
    }


SCHEMAS = _schemas()
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema, DRAFT202012)) for schema in SCHEMAS.values()
)
VALIDATORS = {name: Draft202012Validator(schema, registry=REGISTRY) for name, schema in SCHEMAS.items()}
# The same schemas compiled in Rust, for the hook's fast path: about 1 µs a frame instead of about 100,
# which matters to the tests that flood a socket and time acks in this same process.
FAST = {name: jsonschema_rs.Draft202012Validator(SCHEMAS[name]) for name in SERVER_SENDS}
DOCUMENTED_KEYS = {name: frozenset(SCHEMAS[name]["properties"]) for name in SERVER_SENDS}


def assert_valid_server_frame(frame: object) -> None:
    """A frame the server sent is one of its message types, valid, and carries no undocumented key."""
    assert isinstance(frame, dict), f"the server sent a non-object frame: {frame!r}"
    kind = frame.get("type")
    assert kind in SERVER_SENDS, f"the server sent an undocumented message type: {frame!r}"
    if not FAST[kind].is_valid(frame):  # jsonschema only to say what is wrong
        errors = [error.message for error in VALIDATORS[kind].iter_errors(frame)]
        raise AssertionError(f"{frame!r} does not match {kind}.json: {errors}")
    # The schemas let clients ignore new keys; the server itself must document every key it sends.
    assert DOCUMENTED_KEYS[kind].issuperset(frame), f"{frame!r} has keys that {kind}.json does not document"


def assert_valid_robot_frame(frame: object) -> None:
    kind = frame.get("type") if isinstance(frame, dict) else None
    assert kind in VALIDATORS and kind not in SERVER_SENDS, f"not a robot message type: {frame!r}"
    errors = [error.message for error in VALIDATORS[kind].iter_errors(frame)]
    assert not errors, f"{frame!r} does not match {kind}.json: {errors}"


@pytest.fixture(autouse=True)
def check_server_frames(monkeypatch):
    """Validate every text frame that reaches a test client from the robot route.

    A failure is raised where the frame is received and again at teardown, since a client that
    swallows errors (the library's receive loop reconnects) would otherwise hide it.
    """
    failures: list[str] = []

    def _check_text(text: object) -> None:
        if not isinstance(text, str):
            return
        try:
            assert_valid_server_frame(json.loads(text))
        except AssertionError as exc:
            failures.append(str(exc))
            raise

    receive_output = WebsocketCommunicator.receive_output

    async def checked_receive_output(self, timeout=1):  # noqa: ASYNC109 (channels' signature)
        message = await receive_output(self, timeout)
        if self.scope["path"].startswith(ROBOT_ROUTE) and message.get("type") == "websocket.send":
            _check_text(message.get("text"))
        return message

    recv = ClientConnection.recv

    async def checked_recv(self, decode=None):
        data = await recv(self, decode)
        if self.request is not None and self.request.path.startswith(ROBOT_ROUTE):
            _check_text(data)
        return data

    monkeypatch.setattr(WebsocketCommunicator, "receive_output", checked_receive_output)
    monkeypatch.setattr(ClientConnection, "recv", checked_recv)
    yield
    assert not failures, failures
