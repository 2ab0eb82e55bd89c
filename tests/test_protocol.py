"""Protocol v1: subprotocol negotiation, the published schemas, and idempotent backfill."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from jsonschema import Draft202012Validator

from telemetry.models import TelemetrySample
from telemetry.protocol import SCHEMA_NAMES, SUBPROTOCOL, schema_path
from tests.protocol import assert_valid_robot_frame, assert_valid_server_frame
from tests.test_robot_ws import GOOD, connected, registry, robot_socket, send, telemetry  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


# --- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_each_schema_is_a_valid_draft_2020_12_schema(name):
    schema = json.loads(schema_path(name).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_the_robots_documented_frames_match_their_schemas():
    now = time.time()
    assert_valid_robot_frame({"type": "telemetry", "seq": 17, "ts": now, **GOOD})
    assert_valid_robot_frame({"type": "telemetry", **GOOD})
    assert_valid_robot_frame({"type": "telemetry_batch", "frames": [{"seq": 1, "ts": now, **GOOD}]})
    assert_valid_robot_frame({"type": "ping"})


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "telemetry_batch", "frames": [{"seq": 1, **GOOD}]},  # ts is required in a batch
        {"type": "telemetry_batch", "frames": []},
        {"type": "telemetry", **GOOD, "cpu_usage": 101},
        {"type": "telemetry", **GOOD, "seq": -1},
    ],
)
def test_the_schemas_refuse_what_the_server_refuses(frame):
    with pytest.raises(AssertionError, match="does not match"):
        assert_valid_robot_frame(frame)


@pytest.mark.parametrize(
    "frame, why",
    [
        ({"type": "ack", "seq": 1, "extra": 1}, "does not document"),
        ({"type": "ack", "seq": "1"}, "does not match ack.json"),
        ({"type": "error", "code": "invalid_frame", "detail": "x"}, "does not match error.json"),
        ({"type": "error", "code": "reconnecting_too_fast"}, "does not match error.json"),
        ({"type": "hello"}, "undocumented message type"),
    ],
)
def test_the_frame_check_catches_what_the_server_must_never_send(frame, why):
    with pytest.raises(AssertionError, match=why):
        assert_valid_server_frame(frame)


def test_the_index_lists_every_schema_url_by_direction(client):
    response = client.get("/api/telemetry/protocol/v1/")
    assert response.status_code == 200
    base = "http://testserver/api/telemetry/protocol/v1/"
    assert response.json() == {
        "version": "v1",
        "subprotocol": "fleet-telemetry.v1",
        "robot_sends": {name: f"{base}{name}.json" for name in ("telemetry", "telemetry_batch", "ping")},
        "server_sends": {name: f"{base}{name}.json" for name in ("ack", "pong", "error")},
    }


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_each_schema_is_served_as_the_file_in_docs(client, name):
    response = client.get(f"/api/telemetry/protocol/v1/{name}.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/schema+json"
    assert response.content == schema_path(name).read_bytes()


@pytest.mark.parametrize("name", ["nope", "Telemetry", "__init__"])
def test_an_unknown_schema_is_a_404_that_points_at_the_index(client, name):
    response = client.get(f"/api/telemetry/protocol/v1/{name}.json")
    assert response.status_code == 404
    assert response.json()["code"] == "schema_not_found"


# --- subprotocol ------------------------------------------------------------------------------


def robot_socket_offering(robot, subprotocols: list[str]):
    socket = robot_socket(robot.robot_id, robot.token)
    socket.scope["subprotocols"] = subprotocols
    return socket


async def test_it_echoes_the_v1_subprotocol_when_offered(r2d2, registry):  # noqa: F811
    socket = robot_socket_offering(r2d2, ["fleet-telemetry.v2", SUBPROTOCOL])
    assert await socket.connect(timeout=5) == (True, SUBPROTOCOL)
    assert await send(socket, telemetry(1)) == {"type": "ack", "seq": 1}


async def test_a_robot_that_offers_no_subprotocol_speaks_v1(r2d2, registry):  # noqa: F811
    socket = robot_socket_offering(r2d2, [])
    assert await socket.connect(timeout=5) == (True, None)
    assert await send(socket, telemetry(1)) == {"type": "ack", "seq": 1}


async def test_a_robot_that_offers_only_unknown_versions_is_refused_and_the_reason_logged(r2d2, registry, caplog):  # noqa: F811
    socket = robot_socket_offering(r2d2, ["fleet-telemetry.v2", "mqtt"])
    with caplog.at_level(logging.WARNING, logger="telemetry.consumers"):
        accepted, code = await socket.connect(timeout=5)
    assert (accepted, code) == (False, 1000)  # a close before accept: daphne answers HTTP 403
    assert caplog.messages == [
        "robot 'r2d2' refused: offers only fleet-telemetry.v2, mqtt; this server speaks fleet-telemetry.v1"
    ]


# --- idempotent backfill ----------------------------------------------------------------------


async def test_a_resent_batch_is_acked_again_and_stored_once(r2d2, registry):  # noqa: F811
    socket = await connected(r2d2)
    now = time.time()
    batch = {"type": "telemetry_batch", "frames": [{"seq": n, "ts": now - 10 + n, **GOOD} for n in range(1, 4)]}
    assert await send(socket, batch) == {"type": "ack", "seq": 3, "accepted": 3}
    assert await send(socket, batch) == {"type": "ack", "seq": 3, "accepted": 3}
    stored = await database_sync_to_async(lambda: sorted(TelemetrySample.objects.values_list("seq", flat=True)))()
    assert stored == [1, 2, 3]


async def test_a_batch_that_repeats_an_instant_within_itself_stores_it_once(r2d2, registry):  # noqa: F811
    socket = await connected(r2d2)
    ts = time.time() - 5
    batch = {"type": "telemetry_batch", "frames": [{"seq": 1, "ts": ts, **GOOD}, {"seq": 2, "ts": ts, **GOOD}]}
    assert await send(socket, batch) == {"type": "ack", "seq": 2, "accepted": 2}
    assert await database_sync_to_async(TelemetrySample.objects.count)() == 1


def test_the_migration_keeps_the_first_of_each_duplicate_and_adds_the_constraint(r2d2):
    executor = MigrationExecutor(connection)
    executor.migrate([("telemetry", "0001_initial")])
    executor.loader.build_graph()
    Sample = executor.loader.project_state([("telemetry", "0001_initial")]).apps.get_model(
        "telemetry", "TelemetrySample"
    )
    at = timezone.now()
    for seq in (1, 2, 3):
        Sample.objects.create(robot_id=r2d2.pk, reported_at=at, seq=seq, **GOOD)
    Sample.objects.create(robot_id=r2d2.pk, reported_at=at - timedelta(seconds=1), seq=4, **GOOD)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert sorted(TelemetrySample.objects.values_list("seq", flat=True)) == [1, 4]
    with pytest.raises(IntegrityError), transaction.atomic():
        TelemetrySample.objects.create(robot=r2d2, reported_at=at, seq=5, **GOOD)
