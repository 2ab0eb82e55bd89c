"""The dashboard WebSocket (/api/telemetry/fleet/ws): access, snapshot, fan-out and backpressure."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from rest_framework.authtoken.models import Token

from fleet.asgi import application
from fleet.fanout import GROUP
from fleet.fanout import LAYER as FANOUT_LAYER
from telemetry.dashboard import COALESCED_KEY
from telemetry.models import Alert

pytestmark = pytest.mark.django_db(transaction=True)

METRICS = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


@pytest.fixture
def operator_token(operator) -> str:
    return Token.objects.create(user=operator).key


def dashboard(token: str = "", origin: bytes = b"http://localhost") -> WebsocketCommunicator:
    headers = [(b"origin", origin)] if origin else []
    return WebsocketCommunicator(application, f"/api/telemetry/fleet/ws?token={token}", headers=headers)


def frame(seq: int, robot_id: str = "r2d2") -> dict:
    return {"robot_id": robot_id, "seq": seq, "reported_at": 1703003456.0 + seq, "metrics": METRICS}


async def publish(message: dict) -> None:
    """Send to every dashboard, as the ingest flusher and the aggregation do."""
    await get_channel_layer(FANOUT_LAYER).group_send(GROUP, message)


async def publish_frames(*frames: dict) -> None:
    await publish({"type": "fleet.batch", "frames": list(frames), "robots": []})


async def receive_until_sync(communicator: WebsocketCommunicator) -> tuple[list[dict], int]:
    messages = []
    while True:
        message = await communicator.receive_json_from(timeout=3)
        if message["type"] == "sync":
            return messages, message["sync"]
        messages.append(message)


async def test_anonymous_and_non_staff_dashboards_are_refused(django_user_model):
    # Closed before accept: daphne answers the handshake with HTTP 403.
    communicator = dashboard()
    assert (await communicator.connect())[0] is False

    user = await database_sync_to_async(django_user_model.objects.create_user)("guest", password="x")
    token = await database_sync_to_async(Token.objects.create)(user=user)
    communicator = dashboard(token.key)
    assert (await communicator.connect())[0] is False


async def test_a_foreign_origin_is_refused_even_with_a_valid_token(operator_token):
    communicator = dashboard(operator_token, origin=b"https://evil.example")
    assert (await communicator.connect())[0] is False


async def test_it_starts_with_a_snapshot_of_every_robot_and_the_active_alerts(operator_token, r2d2, battery_low):
    raised_at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    await database_sync_to_async(Alert.objects.create)(
        rule=battery_low, robot=r2d2, raised_at=raised_at, value=12, peak=9
    )
    communicator = dashboard(operator_token)
    assert (await communicator.connect())[0] is True
    assert await communicator.receive_json_from(timeout=3) == {
        "type": "snapshot",
        "robots": [{"robot_id": "r2d2", "connected": False, "reporting": False, "last_seen_at": None, "metrics": None}],
        "alerts": [
            {
                "rule": "battery_low",
                "robot_id": "r2d2",
                "metric": "battery_percentage",
                "value": 12.0,
                "threshold": 20.0,
                "timestamp": raised_at.timestamp(),
            }
        ],
    }
    await communicator.disconnect()


async def test_frames_presence_counters_and_alerts_reach_the_dashboard(operator_token):
    communicator = dashboard(operator_token)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)  # snapshot

    await publish_frames(frame(1), frame(7, "c3po"))
    await publish(
        {"type": "fleet.batch", "frames": [], "robots": [{"robot_id": "c3po", "connected": False, "reporting": False}]}
    )
    counters = [{"name": "mission_status_total", "labels": {"status": "completed"}, "value": 42}]
    await publish({"type": "counters.update", "counters": counters})
    alert = {
        "type": "alert",
        "state": "raised",
        "rule": "battery_low",
        "robot_id": "c3po",
        "metric": "battery_percentage",
    }
    alert |= {"value": 12.0, "threshold": 20.0, "timestamp": 1800000000.0}
    await publish({"type": "fleet.alerts", "alerts": [alert]})

    messages = []
    while len(messages) < 5:
        batch, sync = await receive_until_sync(communicator)
        messages += batch
        await communicator.send_json_to({"type": "ack", "sync": sync})
    assert {"type": "telemetry", **frame(1)} in messages
    assert {"type": "telemetry", **frame(7, "c3po")} in messages
    assert {"type": "presence", "robot_id": "c3po", "connected": False, "reporting": False} in messages
    assert {"type": "counters", "counters": counters} in messages
    assert alert in messages
    await communicator.disconnect()


async def test_a_dashboard_that_falls_behind_gets_each_robots_latest_frame_and_the_rest_is_counted(
    operator_token, redis_client
):
    communicator = dashboard(operator_token)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)  # snapshot

    # Two unacknowledged syncs: the consumer stops sending and starts coalescing.
    await publish_frames(frame(1))
    assert (await receive_until_sync(communicator)) == ([{"type": "telemetry", **frame(1)}], 1)
    await publish_frames(frame(2))
    assert (await receive_until_sync(communicator)) == ([{"type": "telemetry", **frame(2)}], 2)
    for seq in range(3, 8):
        await publish_frames(frame(seq), frame(seq, "c3po"))
    await asyncio.sleep(0.5)
    assert await communicator.receive_nothing(timeout=0.3)

    await communicator.send_json_to({"type": "ack", "sync": 2})
    messages, sync = await receive_until_sync(communicator)
    assert sync == 3
    assert sorted(messages, key=lambda m: m["robot_id"]) == [
        {"type": "telemetry", **frame(7, "c3po")},
        {"type": "telemetry", **frame(7)},
    ]
    await communicator.disconnect()
    assert int(redis_client.get(COALESCED_KEY)) == 8


async def test_a_dashboard_that_stops_acknowledging_is_closed_with_4008(operator_token):
    with override_settings(TELEMETRY_DASHBOARD_STALL_TIMEOUT=0.5):
        communicator = dashboard(operator_token)
        await communicator.connect()
        await communicator.receive_json_from(timeout=3)  # snapshot
        for seq in (1, 2, 3):
            await publish_frames(frame(seq))
            await asyncio.sleep(0.15)
        output = []
        while True:
            message = await communicator.receive_output(timeout=3)
            if message["type"] == "websocket.close":
                break
            output.append(message)
        assert message == {"type": "websocket.close", "code": 4008}


def test_the_dashboard_page_needs_a_staff_login(client, operator):
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/dashboard/")

    client.force_login(operator)
    response = client.get("/dashboard/")
    assert response.status_code == 200
    assert b"vendor/uplot/uPlot.iife.min.js" in response.content
    assert client.get("/").headers["Location"] == "/dashboard/"


async def test_an_aggregation_run_pushes_the_counters_it_changed(operator_token, redis_client):
    from metrics.aggregation import aggregate_mission_metrics

    communicator = dashboard(operator_token)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)  # snapshot
    for status in ("completed", "completed", "failed"):
        redis_client.xadd("brain.events.missions", {"data": json.dumps({"mission_id": "m-1", "status": status})})
    await database_sync_to_async(aggregate_mission_metrics)()

    messages, _ = await receive_until_sync(communicator)
    assert messages == [
        {
            "type": "counters",
            "counters": [
                {"name": "mission_status_total", "labels": {"status": "completed"}, "value": 2},
                {"name": "mission_status_total", "labels": {"status": "failed"}, "value": 1},
            ],
        }
    ]
    await communicator.disconnect()


async def test_an_idle_dashboard_outlives_the_channel_layers_blocking_pop(operator_token):
    # channels-redis blocks 5 s per receive; a shorter socket timeout used to close us with 1011.
    communicator = dashboard(operator_token)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)  # snapshot
    assert await communicator.receive_nothing(timeout=6.5)
    await publish_frames(frame(1))
    assert (await receive_until_sync(communicator)) == ([{"type": "telemetry", **frame(1)}], 1)
    await communicator.disconnect()


@pytest.mark.e2e
def test_a_snapshot_larger_than_the_robots_message_limit_reaches_a_dashboard_through_daphne(operator_token, tmp_path):
    from websockets.sync.client import connect

    from telemetry.models import Robot
    from tests.servers import ServerProcess

    Robot.objects.bulk_create(Robot(robot_id=f"robot-{n:04d}", token_hash="-") for n in range(800))
    server = ServerProcess.daphne(tmp_path)
    try:
        url = f"{server.ws_url}/api/telemetry/fleet/ws?token={operator_token}"
        with connect(url, origin="http://127.0.0.1", max_size=None) as socket:
            raw = socket.recv(timeout=10)
        assert len(raw) > 65536
        snapshot = json.loads(raw)
        assert snapshot["type"] == "snapshot"
        assert [robot["robot_id"] for robot in snapshot["robots"]] == [f"robot-{n:04d}" for n in range(800)]
    finally:
        server.stop()
