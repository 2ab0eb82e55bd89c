"""The robot WebSocket through real daphne processes and a real `websockets` client."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fleet.fanout import GROUP
from fleet.fanout import LAYER as FANOUT_LAYER
from fleet.redis import get_client
from telemetry import latest, presence
from telemetry.models import Robot, RobotSession
from telemetry.robots import create_robot
from tests.servers import ServerProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_written")]

GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}
# Short leases so that a killed process's robots vanish within the test.
ENV = {"TELEMETRY_PRESENCE_TTL": "2"}


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, tmp_path_factory):
    """Two daphne processes on one database and one Redis, shared by the tests that don't stop them."""
    tmp_path = tmp_path_factory.mktemp("daphne")
    with django_db_blocker.unblock():
        pair = [ServerProcess.daphne(tmp_path, **ENV), ServerProcess.daphne(tmp_path, **ENV)]
    yield pair
    for server in pair:
        server.stop()


@pytest.fixture
def robots(transactional_db):
    """Robots r2d2 and bb8 with their tokens."""
    tokens = {}
    for robot_id in ("r2d2", "bb8"):
        _, tokens[robot_id] = create_robot(robot_id)
    return tokens


def robot_socket(server: ServerProcess, robot_id: str, token: str | None = None, query: str = ""):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(f"{server.ws_url}/api/telemetry/ws/{robot_id}{query}", additional_headers=headers, open_timeout=5)


def telemetry(seq: int, **fields) -> str:
    return json.dumps({"type": "telemetry", "seq": seq, **GOOD, **fields})


async def close_code(ws) -> int | None:
    """Wait for the server to close the socket; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def stream_events(event_type: str, within: float = 5.0, count: int = 1) -> list[dict]:
    """Payloads of `event_type` on the event stream, waiting for at least `count` of them."""
    from django.conf import settings

    deadline = time.monotonic() + within
    while True:
        entries = get_client().xrange(settings.FLEET_EVENT_STREAM)
        payloads = [
            json.loads(fields[b"data"])["payload"] for _, fields in entries if fields[b"type"].decode() == event_type
        ]
        if len(payloads) >= count or time.monotonic() > deadline:
            return payloads
        time.sleep(0.05)


async def test_the_handshake_is_refused_with_403_for_every_bad_credential(servers, robots):
    server = servers[0]
    await database_sync_to_async(Robot.objects.create)(robot_id="retired", token_hash="0" * 64, is_active=False)
    cases = [
        ("r2d2", None, ""),
        ("r2d2", "wrong-token", ""),
        ("r2d2", robots["bb8"], ""),
        ("r2d2", None, "?token=wrong"),
        ("c3po", robots["r2d2"], ""),
        ("retired", robots["r2d2"], ""),
        ("..%2F..%2Fetc", robots["r2d2"], ""),
        ("r2d2%20", robots["r2d2"], ""),
        ("x" * 5000, robots["r2d2"], ""),
    ]
    for robot_id, token, query in cases:
        with pytest.raises(InvalidStatus) as refused:
            async with robot_socket(server, robot_id, token, query):
                pass
        assert refused.value.response.status_code == 403, robot_id
    assert await database_sync_to_async(RobotSession.objects.count)() == 0
    assert get_client().keys("telemetry:*") == []
    assert stream_events("telemetry.connection_established", within=0.5) == []
    assert "wrong-token" not in server.output()
    # The same robot with its own token, in the header or the query string, gets in.
    async with robot_socket(server, "r2d2", robots["r2d2"]) as ws:
        await ws.send(telemetry(1))
        assert json.loads(await ws.recv()) == {"type": "ack", "seq": 1}
    async with robot_socket(server, "r2d2", query=f"?token={robots['r2d2']}") as ws:
        await ws.send('{"type": "ping"}')
        assert json.loads(await ws.recv())["type"] == "pong"
    assert robots["r2d2"] not in server.output()


async def test_a_message_over_the_limit_is_closed_with_1009(servers, robots):
    async with robot_socket(servers[0], "r2d2", robots["r2d2"]) as ws:
        await ws.send(telemetry(1, padding="x" * 70_000))
        assert await close_code(ws) == 1009
    (closed,) = stream_events("telemetry.connection_closed")
    assert (closed["robot_id"], closed["reason"], closed["close_code"]) == ("r2d2", "too_large", 1009)


async def test_a_message_over_the_limit_in_continuation_frames_is_closed_with_1009(servers, robots):
    async with robot_socket(servers[0], "r2d2", robots["r2d2"]) as ws:
        try:
            # 10 MB as 64 KiB fragments of one message: daphne never holds more than the limit.
            await ws.send("x" * 65536 for _ in range(160))
        except ConnectionClosed:
            pass
        assert await close_code(ws) == 1009


async def test_a_flooding_robot_gets_rate_limited_and_stays_connected(servers, robots):
    async with robot_socket(servers[0], "r2d2", robots["r2d2"]) as ws:
        for seq in range(25):
            await ws.send(telemetry(seq))
        replies = [json.loads(await ws.recv()) for _ in range(21)]
        assert replies[:20] == [{"type": "ack", "seq": seq} for seq in range(20)]
        # One error for the second's five extra frames, sent without decoding them (so no seq).
        assert replies[20:] == [
            {"type": "error", "code": "rate_limited", "detail": "more than 20 frames per second", "seq": None}
        ]
        await asyncio.sleep(1.0)
        await ws.send(telemetry(25))
        assert json.loads(await ws.recv()) == {"type": "ack", "seq": 25}


async def test_a_reconnect_to_another_process_replaces_the_old_session_with_4409(servers, robots):
    a, b = servers
    async with robot_socket(a, "r2d2", robots["r2d2"]) as old:
        await old.send(telemetry(1))
        await old.recv()
        async with robot_socket(b, "r2d2", robots["r2d2"]) as new:
            assert await close_code(old) == 4409
            await new.send(telemetry(2))
            assert json.loads(await new.recv()) == {"type": "ack", "seq": 2}
            (closed,) = stream_events("telemetry.connection_closed")
            assert (closed["reason"], closed["close_code"]) == ("replaced", 4409)
            counts = wait_for(lambda: presence.fleet_counts()["active_connections"] == 1 and presence.fleet_counts(), 3)
            assert counts == {"active_connections": 1, "robots_connected": 1, "robots_reporting": 1}


async def test_presence_spans_processes_and_a_killed_process_leases_expire(servers, robots, tmp_path):
    doomed = await asyncio.to_thread(ServerProcess.daphne, tmp_path, **ENV)
    try:
        async with (
            robot_socket(doomed, "r2d2", robots["r2d2"]) as on_doomed,
            robot_socket(servers[1], "bb8", robots["bb8"]) as on_b,
        ):
            for ws in (on_doomed, on_b):
                await ws.send(telemetry(1))
                await ws.recv()
            counts = await asyncio.to_thread(
                wait_for, lambda: presence.fleet_counts()["robots_reporting"] == 2 and presence.fleet_counts(), 3
            )
            assert counts == {"active_connections": 2, "robots_connected": 2, "robots_reporting": 2}
            assert latest.latest_metrics("r2d2")["seq"] == 1

            layer = get_channel_layer(FANOUT_LAYER)
            dashboard = await layer.new_channel()
            await layer.group_add(GROUP, dashboard)
            doomed.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            gone = await asyncio.to_thread(
                wait_for, lambda: presence.fleet_counts()["active_connections"] == 1, 5, 0.05
            )
            assert gone and time.monotonic() - killed_at <= 2.5
            assert presence.robot_states(["r2d2", "bb8"]) == {
                "r2d2": {"connected": False, "reporting": True},
                "bb8": {"connected": True, "reporting": True},
            }
            # The survivor's process notices the expiry and tells the dashboards.
            announced = None
            while announced is None:
                message = await asyncio.wait_for(layer.receive(dashboard), 5)
                if message["type"] == "fleet.batch":
                    announced = [robot for robot in message["robots"] if robot["robot_id"] == "r2d2"] or None
            assert announced == [{"robot_id": "r2d2", "connected": False, "reporting": True}]
            # The survivor's lease keeps being refreshed past the TTL.
            await asyncio.sleep(2.5)
            assert presence.fleet_counts()["active_connections"] == 1
            await on_b.send('{"type": "ping"}')
            assert json.loads(await on_b.recv())["type"] == "pong"
    finally:
        doomed.stop()


async def test_sigterm_closes_every_robot_with_1001_and_flushes_their_sessions(robots, tmp_path):
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path, **ENV)
    try:
        sockets = [await robot_socket(server, robot_id, robots[robot_id]).__aenter__() for robot_id in robots]
        for seq, ws in enumerate(sockets):
            await ws.send(telemetry(seq))
            await ws.recv()
        server.signal(signal.SIGTERM)
        codes = await asyncio.gather(*(close_code(ws) for ws in sockets))
        assert codes == [1001, 1001]
        assert await asyncio.to_thread(server.wait, 15) == 0
    finally:
        server.stop()
    sessions = await database_sync_to_async(
        lambda: sorted(RobotSession.objects.values_list("robot__robot_id", "reason", "close_code", "frames_accepted"))
    )()
    assert sessions == [("bb8", "server_shutdown", 1001, 1), ("r2d2", "server_shutdown", 1001, 1)]
    assert presence.fleet_counts() == {"active_connections": 0, "robots_connected": 0, "robots_reporting": 2}
    assert latest.latest_metrics("bb8")["seq"] == 1
    closed = stream_events("telemetry.connection_closed", count=2)
    assert sorted((event["robot_id"], event["reason"], event["close_code"]) for event in closed) == [
        ("bb8", "server_shutdown", 1001),
        ("r2d2", "server_shutdown", 1001),
    ]
