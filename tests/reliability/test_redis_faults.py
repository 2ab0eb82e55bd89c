"""Redis hung, then Redis stopped, under a live daphne with robots streaming: nothing restarts, nothing is lost
that fits the event buffer, and what does not fit is counted exactly.

The test runs its own redis-server (the suite's may be an external one it must not stop).
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from channels.db import database_sync_to_async

from fleet.embedded_redis import EmbeddedRedis
from fleet.events.stream import DROPPED_KEY
from telemetry.flusher import FRAMES_KEY
from tests.reliability.fleet import (
    assert_no_secret_in_logs,
    http_get,
    last_event_id,
    make_robots,
    open_many,
    open_robot,
    stream_events,
    telemetry,
)
from tests.servers import ServerProcess, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BUFFER = 100
ROBOTS = 5
OUTAGE_ROUNDS = 30  # frames per robot while Redis is down: 150 events for a buffer of 100


@pytest.fixture
def private_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    yield server
    server.stop()


async def exchange(ws, seq: int, cpu: float, within: float) -> float:
    """One frame and its ack, which must come within `within` seconds; the seconds it took."""
    started = asyncio.get_running_loop().time()
    await ws.send(telemetry(seq, cpu_usage=cpu))
    reply = json.loads(await asyncio.wait_for(ws.recv(), within))
    assert reply == {"type": "ack", "seq": seq}
    return asyncio.get_running_loop().time() - started


async def test_daphne_rides_out_a_hung_then_a_stopped_redis_without_a_restart(private_redis, tmp_path):
    client = redis.Redis(unix_socket_path=str(private_redis.socket), socket_timeout=5)
    tokens = await database_sync_to_async(make_robots)(ROBOTS + 1)
    late_id, late_token = tokens.popitem()
    server = await asyncio.to_thread(
        ServerProcess.daphne,
        tmp_path,
        REDIS_URL=private_redis.url,
        FLEET_EVENT_BUFFER=str(BUFFER),
        # One metrics_published per accepted frame, so every frame is an event we can follow.
        TELEMETRY_PUBLISH_MIN_INTERVAL="0",
        TELEMETRY_PUBLISH_ON_INGEST="1",
        TELEMETRY_MAX_FRAMES_PER_SECOND="1000",
    )
    pid = server.process.pid
    accepted = 0
    try:
        sockets = await open_many(server.ws_url, tokens)
        robots = sorted(sockets)
        for n, robot_id in enumerate(robots):
            await exchange(sockets[robot_id], n, 1.0, 1.0)
            accepted += 1
        assert wait_for(lambda: len(stream_events(client)) == 2 * ROBOTS, 5)

        # --- Hung: every command waits. Nothing that answers robots or the public may wait with it.
        mark = last_event_id(client)
        # Budgets of 3 s: six times the clients' 0.5 s timeout (a busy machine), a third of the 10 s hang.
        client.execute_command("CLIENT", "PAUSE", 10000, "ALL")
        try:
            status, info, took = await asyncio.to_thread(http_get, f"{server.base_url}/api/telemetry/info")
            assert (status, info["active_connections"], info["degraded"]) == (200, None, True)
            assert took < 3.0
            status, health, took = await asyncio.to_thread(http_get, f"{server.base_url}/healthz")
            assert status == 503 and health["redis"] == "error" and took < 3.0
            for n, robot_id in enumerate(robots):
                assert await exchange(sockets[robot_id], 100 + n, 2.0, 3.0) < 3.0
                accepted += 1
            # A robot that connects now gets in (its lease is written on the next refresh) and is acked.
            started = asyncio.get_running_loop().time()
            late = await open_robot(server.ws_url, late_id, late_token)
            await exchange(late, 1, 3.0, 3.0)
            accepted += 1
            assert asyncio.get_running_loop().time() - started < 5.0
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
        # Every event of the hang arrives once, in order, once Redis answers.
        hung = wait_for(lambda: len(events := stream_events(client, after=mark)) >= ROBOTS + 2 and events, 10)
        assert [(event["type"], event["payload"]["robot_id"]) for _, event in hung] == [
            *(("telemetry.metrics_published", robot_id) for robot_id in robots),
            ("telemetry.connection_established", late_id),
            ("telemetry.metrics_published", late_id),
        ]
        await late.close()
        assert wait_for(lambda: len(stream_events(client, "telemetry.connection_closed")) == 1, 5)

        # --- Stopped: the robots stream on; their events wait in the bounded buffer.
        mark = last_event_id(client)
        private_redis.stop()
        status, health, took = await asyncio.to_thread(http_get, f"{server.base_url}/healthz")
        assert status == 503 and health["redis"] == "error" and took < 3.0
        sent = []
        for round_ in range(OUTAGE_ROUNDS):
            for robot_id in robots:
                cpu = round(10 + round_ + robots.index(robot_id) / 10, 1)
                await exchange(sockets[robot_id], 1000 + round_, cpu, 1.0)
                sent.append((robot_id, cpu))
                accepted += 1
        await asyncio.sleep(2.0)  # a few seconds of outage, then Redis is back with its data
        status, health, _ = await asyncio.to_thread(http_get, f"{server.base_url}/healthz")
        assert status == 503
        private_redis.start()

        assert await asyncio.to_thread(server.wait_http, "/healthz", 10) is None
        delivered = wait_for(lambda: len(events := stream_events(client, after=mark)) >= BUFFER and events, 10)
        assert [(e["payload"]["robot_id"], e["payload"]["metrics"]["cpu_usage"]) for _, e in delivered] == sent[
            -BUFFER:
        ]
        assert wait_for(lambda: int(client.get(DROPPED_KEY) or 0), 5) == len(sent) - BUFFER
        # The robots never noticed: same sockets, same process, still acked.
        for n, robot_id in enumerate(robots):
            await exchange(sockets[robot_id], 5000 + n, 4.0, 1.0)
            accepted += 1
        assert server.process.poll() is None and server.process.pid == pid
        # Frame counts kept in memory through the outage are all written once it ends.
        assert wait_for(lambda: int(client.hget(FRAMES_KEY, "accepted") or 0) == accepted, 5)
        assert int(client.hget(FRAMES_KEY, "accepted")) == accepted
        status, info, _ = await asyncio.to_thread(http_get, f"{server.base_url}/api/telemetry/info")
        assert (info["active_connections"], info["robots_connected"]) == (ROBOTS, ROBOTS)
        for ws in sockets.values():
            await ws.close()
    finally:
        server.stop()
    assert_no_secret_in_logs([server.log_path], [*tokens.values(), late_token])
