"""The robot WebSocket through WebsocketCommunicator: real database, real Redis, real channel layer."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from fleet.fanout import GROUP
from fleet.fanout import LAYER as FANOUT_LAYER
from fleet.redis import get_client
from telemetry import latest, presence, refusals, signals
from telemetry.connections import get_registry
from telemetry.flusher import frame_totals
from telemetry.models import Robot, RobotSession, TelemetrySample
from telemetry.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)

APP = URLRouter(websocket_urlpatterns)
GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


@pytest.fixture
def events():
    """Every telemetry signal sent during the test, as (name, payload) in order."""
    seen: list[tuple[str, dict]] = []
    receivers = []
    for name in ("connection_established", "connection_closed", "metrics_published"):

        def receive(sender, _name=name, **kwargs):
            kwargs.pop("signal", None)
            seen.append((_name, kwargs))

        getattr(signals, name).connect(receive, weak=False)
        receivers.append((getattr(signals, name), receive))
    yield seen
    for signal, receive in receivers:
        signal.disconnect(receive)


_sockets: list[WebsocketCommunicator] = []


@pytest.fixture
async def registry():
    """This loop's connection registry; at the end every socket is hung up and the state flushed."""
    registry = get_registry()
    yield registry
    while _sockets:
        # Also the ones the server closed: their consumers end only when the client hangs up.
        await _sockets.pop().disconnect(timeout=5)
    await registry.stop()


def robot_socket(robot_id: str, token: str | None, query: str = "") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    socket = WebsocketCommunicator(APP, f"/api/telemetry/ws/{robot_id}{query}", headers=headers)
    _sockets.append(socket)
    return socket


async def connected(robot) -> WebsocketCommunicator:
    socket = robot_socket(robot.robot_id, robot.token)
    accepted, _ = await socket.connect(timeout=5)
    assert accepted
    return socket


async def send(socket: WebsocketCommunicator, payload: dict) -> dict:
    await socket.send_json_to(payload)
    return await socket.receive_json_from(timeout=5)


async def joined(robot_id: str, members: int = 1) -> None:
    """Wait until the robot's sockets are in its channel-layer group (they join right after accept)."""
    for _ in range(100):
        if get_client().zcard(f"asgi:group:robot.{robot_id}") >= members:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"robot.{robot_id} has fewer than {members} members")


def telemetry(seq: int | None = None, **fields) -> dict:
    frame = {"type": "telemetry", **GOOD, **fields}
    if seq is not None:
        frame["seq"] = seq
    return frame


def closed(events: list) -> list[dict]:
    return [payload for name, payload in events if name == "connection_closed"]


def assert_closed_event(events: list, robot, reason: str, close_code: int | None) -> dict:
    (payload,) = closed(events)
    assert set(payload) == {
        "robot_id",
        "connection_id",
        "duration_seconds",
        "reason",
        "close_code",
        "timestamp",
    }
    assert payload["robot_id"] == robot.robot_id
    assert payload["reason"] == reason
    assert payload["close_code"] == close_code
    assert type(payload["duration_seconds"]) is float and 0 <= payload["duration_seconds"] < 10
    assert abs(payload["timestamp"] - time.time()) < 10
    return payload


# --- handshake ---------------------------------------------------------------------------------


async def test_it_accepts_a_robot_with_its_token_and_announces_the_connection(r2d2, events, registry):
    socket = await connected(r2d2)
    ((name, payload),) = events
    assert name == "connection_established"
    assert set(payload) == {"robot_id", "connection_id", "timestamp"}
    assert payload["robot_id"] == "r2d2"
    assert payload["connection_id"].startswith("ws_r2d2_")
    _, _, ms, random_hex = payload["connection_id"].rsplit("_", 3)
    assert abs(int(ms) / 1000 - payload["timestamp"]) < 0.002
    assert re.fullmatch("[0-9a-f]{16}", random_hex)  # 64 random bits
    assert presence.fleet_counts() == {"active_connections": 1, "robots_connected": 1, "robots_reporting": 0}
    await socket.disconnect()


async def test_it_accepts_the_token_in_the_query_string(r2d2, registry):
    socket = robot_socket("r2d2", None, f"?token={r2d2.token}")
    assert (await socket.connect(timeout=5))[0]
    await socket.disconnect()


@pytest.mark.parametrize(
    ("robot_id", "token"),
    [
        ("r2d2", None),
        ("r2d2", "wrong"),
        ("r2d2", "c3po's"),
        ("c3po", "r2d2's"),
        ("../r2d2", "r2d2's"),
        ("ünicode", "r2d2's"),
        ("a" * 10_000, "r2d2's"),
    ],
)
async def test_it_rejects_the_handshake_and_stores_nothing(r2d2, events, registry, robot_id, token):
    from telemetry.robots import create_robot

    _, c3po_token = await sync_to_async(create_robot)("c3po")
    token = {"r2d2's": r2d2.token, "c3po's": c3po_token}.get(token, token)
    socket = robot_socket(robot_id, token)
    accepted, _ = await socket.connect(timeout=5)
    assert not accepted
    assert events == []
    assert await sync_to_async(RobotSession.objects.count)() == 0
    assert get_client().keys("*") == []
    await socket.wait()


async def test_it_rejects_an_inactive_robot(r2d2, events, registry):
    await sync_to_async(Robot.objects.filter(pk=r2d2.pk).update)(is_active=False)
    accepted, _ = await robot_socket("r2d2", r2d2.token).connect(timeout=5)
    assert not accepted
    assert events == []


# --- frames ------------------------------------------------------------------------------------


async def test_it_acks_a_frame_and_stores_it_on_the_next_flush(r2d2, events, registry):
    socket = await connected(r2d2)
    ts = time.time() - 1
    assert await send(socket, telemetry(17, ts=ts)) == {"type": "ack", "seq": 17}
    await registry.drain()
    assert latest.latest_metrics("r2d2") == {**GOOD, "reported_at": ts, "seq": 17}
    assert presence.robot_states(["r2d2"]) == {"r2d2": {"connected": True, "reporting": True}}
    sample = await sync_to_async(TelemetrySample.objects.get)()
    assert (sample.seq, sample.cpu_usage, sample.reported_at.timestamp()) == (17, 45.2, pytest.approx(ts))
    robot = await sync_to_async(Robot.objects.get)(pk=r2d2.pk)
    assert abs(robot.last_seen_at.timestamp() - time.time()) < 5
    # Nobody read the robot's metrics, and ingest does not publish them by default.
    assert [name for name, _ in events if name == "metrics_published"] == []
    await socket.disconnect()


async def test_it_acks_a_frame_without_seq_with_a_null_seq(r2d2, registry):
    socket = await connected(r2d2)
    assert await send(socket, telemetry()) == {"type": "ack", "seq": None}
    await socket.disconnect()


async def test_it_answers_a_ping_with_server_time(r2d2, registry):
    socket = await connected(r2d2)
    before = time.time()
    pong = await send(socket, {"type": "ping"})
    assert pong["type"] == "pong" and set(pong) == {"type", "ts"}
    assert before <= pong["ts"] <= time.time()
    await socket.disconnect()


async def test_it_downsamples_history_but_keeps_every_latest_value(r2d2, registry, settings):
    settings.TELEMETRY_SAMPLE_INTERVAL = 3600
    settings.TELEMETRY_PUBLISH_MIN_INTERVAL = 3600
    socket = await connected(r2d2)
    for seq in range(5):
        assert await send(socket, telemetry(seq, cpu_usage=seq)) == {"type": "ack", "seq": seq}
    await registry.drain()
    assert await sync_to_async(list)(TelemetrySample.objects.values_list("seq", flat=True)) == [0]
    assert latest.latest_metrics("r2d2")["cpu_usage"] == 4
    await socket.disconnect()


async def test_with_publish_on_ingest_it_publishes_a_frame_s_metrics(r2d2, events, registry, settings):
    settings.TELEMETRY_PUBLISH_ON_INGEST = True
    socket = await connected(r2d2)
    await send(socket, telemetry(1))
    for _ in range(100):  # the fleet-wide gate answers after the ack
        if any(name == "metrics_published" for name, _ in events):
            break
        await asyncio.sleep(0.02)
    published = [payload for name, payload in events if name == "metrics_published"]
    assert published == [
        {
            "robot_id": "r2d2",
            "metrics": GOOD,
            "timestamp": pytest.approx(time.time(), abs=5),
            "connection_id": events[0][1]["connection_id"],
        }
    ]
    await socket.disconnect()


async def test_it_publishes_metrics_on_every_frame_when_the_interval_is_zero(r2d2, events, registry, settings):
    settings.TELEMETRY_PUBLISH_ON_INGEST = True
    settings.TELEMETRY_PUBLISH_MIN_INTERVAL = 0
    socket = await connected(r2d2)
    for seq in range(3):
        await send(socket, telemetry(seq, cpu_usage=seq))
    published = [payload["metrics"]["cpu_usage"] for name, payload in events if name == "metrics_published"]
    assert published == [0, 1, 2]
    await socket.disconnect()


async def test_it_publishes_metrics_at_most_once_per_interval(r2d2, events, registry, settings):
    settings.TELEMETRY_PUBLISH_ON_INGEST = True
    settings.TELEMETRY_PUBLISH_MIN_INTERVAL = 3600
    socket = await connected(r2d2)
    for seq in range(3):
        await send(socket, telemetry(seq))
    for _ in range(250):  # the fleet-wide gate answers after the ack
        if [name for name, _ in events].count("metrics_published") >= 1:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # room for a second publish, which must not come
    assert [name for name, _ in events].count("metrics_published") == 1
    await socket.disconnect()


async def test_it_stores_every_frame_of_a_backfill_batch_before_the_ack(r2d2, registry, settings):
    settings.TELEMETRY_SAMPLE_INTERVAL = 3600
    socket = await connected(r2d2)
    now = time.time()
    frames = [telemetry(seq, ts=now - 100 + seq) for seq in range(40)]
    assert await send(socket, {"type": "telemetry_batch", "frames": frames}) == {
        "type": "ack",
        "seq": 39,
        "accepted": 40,
    }
    # Committed before the ack, without waiting for a flush.
    assert await sync_to_async(TelemetrySample.objects.count)() == 40
    await registry.drain()
    assert latest.latest_metrics("r2d2")["seq"] == 39
    await socket.disconnect()


async def test_it_reports_invalid_batch_frames_and_acks_the_rest(r2d2, registry):
    socket = await connected(r2d2)
    now = time.time()
    frames = [telemetry(1, ts=now - 9), telemetry(2, ts=now - 8, cpu_usage=-5), telemetry(3, ts=now - 7)]
    await socket.send_json_to({"type": "telemetry_batch", "frames": frames})
    assert await socket.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "frames[1].cpu_usage must be between 0 and 100",
        "seq": 2,
    }
    assert await socket.receive_json_from(timeout=5) == {"type": "ack", "seq": 3, "accepted": 2}
    await registry.drain()
    assert await sync_to_async(list)(TelemetrySample.objects.order_by("seq").values_list("seq", flat=True)) == [1, 3]
    await socket.disconnect()


async def test_it_keeps_the_connection_open_after_errors(r2d2, registry):
    socket = await connected(r2d2)
    assert await send(socket, telemetry(5, battery_percentage=200)) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "battery_percentage must be between 0 and 100",
        "seq": 5,
    }
    await socket.send_to(text_data="{oops")
    error = await socket.receive_json_from(timeout=5)
    assert (error["code"], error["seq"]) == ("invalid_json", None)
    assert await send(socket, {"type": "dance", "seq": 6}) == {
        "type": "error",
        "code": "unknown_type",
        "detail": "type must be one of telemetry, telemetry_batch, ping",
        "seq": 6,
    }
    await socket.send_to(bytes_data=b"\x00\x01")
    assert await socket.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "binary frames are not supported; send JSON text",
        "seq": None,
    }
    assert await send(socket, telemetry(7)) == {"type": "ack", "seq": 7}
    await registry.drain()
    assert await sync_to_async(TelemetrySample.objects.count)() == 1
    assert frame_totals(get_client()) == {"accepted": 1, "rejected": 4}
    await socket.disconnect()


async def test_it_rate_limits_the_frames_beyond_the_limit_per_second(r2d2, registry, settings):
    settings.TELEMETRY_MAX_FRAMES_PER_SECOND = 5
    socket = await connected(r2d2)
    for seq in range(8):
        await socket.send_json_to(telemetry(seq))
    replies = [await socket.receive_json_from(timeout=5) for _ in range(6)]
    assert replies[:5] == [{"type": "ack", "seq": seq} for seq in range(5)]
    # Checked before decoding, so without a seq; one error for the whole second, not one per frame.
    assert replies[5:] == [
        {"type": "error", "code": "rate_limited", "detail": "more than 5 frames per second", "seq": None}
    ]
    assert await socket.receive_nothing(timeout=0.3)
    await registry.drain()
    assert frame_totals(get_client()) == {"accepted": 5, "rejected": 3}
    await socket.disconnect()


# --- close paths and their events ---------------------------------------------------------------


async def test_it_reports_a_client_disconnect_and_closes_the_session(r2d2, events, registry):
    socket = await connected(r2d2)
    await send(socket, telemetry(1))
    await send(socket, telemetry(2, cpu_usage=-1))
    await socket.disconnect(code=1000)
    await registry.drain()
    payload = assert_closed_event(events, r2d2, "client_disconnect", 1000)
    session = await sync_to_async(RobotSession.objects.get)()
    assert (session.connection_id, session.reason, session.close_code) == (
        payload["connection_id"],
        "client_disconnect",
        1000,
    )
    assert (session.frames_accepted, session.frames_rejected) == (1, 1)
    assert session.disconnected_at.timestamp() == pytest.approx(payload["timestamp"])
    assert presence.fleet_counts() == {"active_connections": 0, "robots_connected": 0, "robots_reporting": 1}


async def test_it_closes_with_1008_after_too_many_rejected_frames_in_a_row(r2d2, events, registry, settings):
    settings.TELEMETRY_MAX_INVALID_FRAMES = 3
    socket = await connected(r2d2)
    await send(socket, telemetry(1, cpu_usage=-1))
    await send(socket, telemetry(2))  # an accepted frame starts the count again
    for seq in range(3, 6):
        await send(socket, telemetry(seq, cpu_usage=-1))
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "protocol_error",
    }
    assert_closed_event(events, r2d2, "protocol_error", 1008)
    await registry.drain()
    session = await sync_to_async(RobotSession.objects.get)()
    assert (session.reason, session.close_code, session.frames_accepted, session.frames_rejected) == (
        "protocol_error",
        1008,
        1,
        4,
    )
    assert presence.fleet_counts()["active_connections"] == 0


async def test_it_closes_a_message_over_the_size_limit_with_1009(r2d2, events, registry, settings):
    settings.TELEMETRY_MAX_MESSAGE_BYTES = 1024
    socket = await connected(r2d2)
    await socket.send_json_to(telemetry(1, padding="é" * 600))
    assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009, "reason": "too_large"}
    assert_closed_event(events, r2d2, "too_large", 1009)


async def test_it_closes_an_idle_socket_with_4000(r2d2, events, registry, settings):
    settings.TELEMETRY_IDLE_TIMEOUT = 0.4
    socket = await connected(r2d2)
    started = time.monotonic()
    assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4000, "reason": "idle_timeout"}
    assert 0.4 <= time.monotonic() - started < 3
    assert_closed_event(events, r2d2, "idle_timeout", 4000)


async def test_it_refuses_a_robot_reconnecting_too_fast_with_4429_storing_nothing(r2d2, events, registry, settings):
    settings.TELEMETRY_MAX_CONNECTS_PER_MINUTE = 2
    for _ in range(2):
        socket = await connected(r2d2)
        await socket.disconnect()
    await registry.drain()
    events.clear()
    socket = await connected(r2d2)
    reply = await socket.receive_json_from(timeout=5)
    assert reply == {"type": "error", "code": "reconnecting_too_fast", "retry_after": 60}
    assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4429, "reason": "rate_limited"}
    await registry.drain()
    await refusals.flush()
    assert events == []
    assert await sync_to_async(RobotSession.objects.count)() == 2
    assert presence.fleet_counts()["active_connections"] == 0
    assert refusals.totals(get_client())["reconnecting_too_fast"] == 1


async def test_a_newer_connection_replaces_the_older_with_4409(r2d2, events, registry):
    old = await connected(r2d2)
    await joined("r2d2")
    new = await connected(r2d2)
    assert await old.receive_output(timeout=5) == {"type": "websocket.close", "code": 4409, "reason": "replaced"}
    payload = assert_closed_event(events, r2d2, "replaced", 4409)
    established = [p["connection_id"] for name, p in events if name == "connection_established"]
    assert payload["connection_id"] == established[0]
    pong = await send(new, {"type": "ping"})
    assert (pong["type"], set(pong)) == ("pong", {"type", "ts"})
    await registry.drain()
    assert presence.fleet_counts() == {"active_connections": 1, "robots_connected": 1, "robots_reporting": 0}
    await new.disconnect()


async def test_simultaneous_connections_still_leave_only_the_newest(r2d2, events, registry):
    # Both connect before either has joined the group: the newer re-announces itself when it hears the older.
    old = await connected(r2d2)
    new = await connected(r2d2)
    assert await old.receive_output(timeout=5) == {"type": "websocket.close", "code": 4409, "reason": "replaced"}
    pong = await send(new, {"type": "ping"})
    assert (pong["type"], set(pong)) == ("pong", {"type", "ts"})
    assert len(closed(events)) == 1
    await new.disconnect()


async def test_it_closes_a_revoked_robot_with_4403(r2d2, events, registry):
    socket = await connected(r2d2)
    await joined("r2d2")
    await get_channel_layer().group_send("robot.r2d2", {"type": "robot.revoke"})
    assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403, "reason": "revoked"}
    assert_closed_event(events, r2d2, "revoked", 4403)


async def test_it_closes_every_socket_with_1001_on_shutdown(r2d2, events, registry):
    socket = await connected(r2d2)
    await send(socket, telemetry(1))
    from fleet import shutdown

    await asyncio.wait_for(shutdown.run_hooks(5), 6)
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 1001,
        "reason": "server_shutdown",
    }
    assert_closed_event(events, r2d2, "server_shutdown", 1001)
    session = await sync_to_async(RobotSession.objects.get)()
    assert (session.reason, session.close_code, session.frames_accepted) == ("server_shutdown", 1001, 1)
    assert presence.fleet_counts()["active_connections"] == 0


# --- fan-out -----------------------------------------------------------------------------------


async def test_it_fans_out_the_latest_frame_per_robot_once_per_interval(r2d2, registry, settings):
    layer = get_channel_layer(FANOUT_LAYER)
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    socket = await connected(r2d2)
    assert await asyncio.wait_for(layer.receive(channel), 5) == {
        "type": "fleet.batch",
        "frames": [],
        "robots": [{"robot_id": "r2d2", "connected": True, "reporting": False}],
    }
    # Long enough that three acked frames fit in one interval even on a busy machine.
    settings.TELEMETRY_FLUSH_INTERVAL = 2.0
    await asyncio.sleep(0.3)
    for seq in range(3):
        await send(socket, telemetry(seq, cpu_usage=seq, ts=time.time() - 1000))
    # One message for the interval: the latest of the three frames, and the robot now reporting.
    assert await asyncio.wait_for(layer.receive(channel), 10) == {
        "type": "fleet.batch",
        "frames": [
            {
                "robot_id": "r2d2",
                "seq": 2,
                "reported_at": pytest.approx(time.time() - 1000, abs=5),
                "metrics": {**GOOD, "cpu_usage": 2.0},
            }
        ],
        "robots": [{"robot_id": "r2d2", "connected": True, "reporting": True}],
    }
    await socket.disconnect()
