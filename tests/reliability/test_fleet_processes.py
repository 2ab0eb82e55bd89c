"""Two daphne processes and a qcluster serving one fleet; then one daphne killed (-9) and the other stopped (TERM)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django_q.tasks import async_task
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect

from fleet.redis import get_client
from telemetry import presence
from tests.reliability.fleet import (
    assert_no_secret_in_logs,
    close_code,
    http_get,
    last_event_id,
    make_robots,
    open_many,
    open_robot,
    round_trip,
    stream_events,
)
from tests.servers import ServerProcess, child_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TTL = 2.0
ENV = {"TELEMETRY_PRESENCE_TTL": str(TTL)}
PER_PROCESS = 100


class Dashboard:
    """A dashboard client that acknowledges every sync and keeps what it received."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[dict] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            self.messages.append(message)
            if message["type"] == "sync":
                await self.ws.send(json.dumps({"type": "ack", "sync": message["sync"]}))

    def telemetry_seqs(self) -> dict[str, int]:
        return {m["robot_id"]: m["seq"] for m in self.messages if m["type"] == "telemetry"}

    async def wait(self, predicate, within: float = 10.0):
        deadline = time.monotonic() + within
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.05)


def fleet_counts() -> dict[str, int]:
    return presence.fleet_counts(get_client())


async def test_two_daphnes_and_a_qcluster_serve_one_fleet_through_a_kill_and_a_stop(tmp_path, operator):
    tokens = await database_sync_to_async(make_robots)(2 * PER_PROCESS)
    on_a = dict(list(tokens.items())[:PER_PROCESS])
    on_b = dict(list(tokens.items())[PER_PROCESS:])
    api_token = (await database_sync_to_async(Token.objects.create)(user=operator)).key
    a, b = await asyncio.gather(
        asyncio.to_thread(ServerProcess.daphne, tmp_path, **ENV),
        asyncio.to_thread(ServerProcess.daphne, tmp_path, **ENV),
    )
    cluster = ServerProcess([sys.executable, "manage.py", "qcluster"], child_env(**ENV), tmp_path / "qcluster.log")
    try:
        dashboard = Dashboard(
            await connect(
                f"{a.ws_url}/api/telemetry/fleet/ws?token={api_token}",
                additional_headers={"Origin": a.base_url},
                open_timeout=10,
            )
        )
        sockets = await open_many(a.ws_url, on_a) | await open_many(b.ws_url, on_b)
        replies = await asyncio.gather(*(round_trip(ws, 1) for ws in sockets.values()))
        assert [reply for reply, _ in replies] == [{"type": "ack", "seq": 1}] * len(tokens)

        # Either port reports the same fleet-wide counts.
        full = {"active_connections": 200, "robots_connected": 200, "robots_reporting": 200}
        assert await asyncio.to_thread(wait_for, lambda: fleet_counts() == full, 5)
        infos = [(await asyncio.to_thread(http_get, f"{server.base_url}/api/telemetry/info"))[1] for server in (a, b)]
        assert [{key: info[key] for key in full} for info in infos] == [full, full]

        # The dashboard on A sees the frames of the robots on B.
        await asyncio.gather(*(round_trip(sockets[robot_id], 2) for robot_id in on_b))
        seen = await dashboard.wait(lambda: all(dashboard.telemetry_seqs().get(r) == 2 for r in on_b))
        assert seen, f"{sum(1 for r in on_b if dashboard.telemetry_seqs().get(r) == 2)} of {PER_PROCESS} seen"

        # The qcluster's aggregation reaches the same dashboard.
        client = get_client()
        for n in range(10):
            client.xadd(
                settings.FLEET_MISSION_STREAM, {"data": json.dumps({"mission_id": f"m{n}", "status": "completed"})}
            )
        async_task("metrics.aggregation.aggregate_mission_metrics")
        counters = await dashboard.wait(lambda: [m for m in dashboard.messages if m["type"] == "counters"], 30)
        assert counters, cluster.output()
        assert {"name": "mission_status_total", "labels": {"status": "completed"}, "value": 10} in counters[0][
            "counters"
        ]

        # A robot of A that reconnects to B replaces its session on A.
        moved = next(iter(on_a))
        old = sockets[moved]
        sockets[moved] = await open_robot(b.ws_url, moved, tokens[moved])
        assert await close_code(old) == 4409
        assert (await round_trip(sockets[moved], 3))[0] == {"type": "ack", "seq": 3}
        replaced = await asyncio.to_thread(wait_for, lambda: stream_events(client, "telemetry.connection_closed"), 5)
        assert [
            (e["payload"]["robot_id"], e["payload"]["reason"], e["payload"]["close_code"]) for _, e in replaced
        ] == [(moved, "replaced", 4409)]

        # A is killed: its leases expire within the TTL and the count drops to B's robots.
        a.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        expected = {"active_connections": PER_PROCESS + 1, "robots_connected": PER_PROCESS + 1}
        dropped = await asyncio.to_thread(
            wait_for, lambda: {k: v for k, v in fleet_counts().items() if k in expected} == expected, TTL + 3, 0.05
        )
        assert dropped and time.monotonic() - killed_at <= TTL + 1.0
        # Its robots come back through B and are counted once.
        stranded = [robot_id for robot_id in on_a if robot_id != moved]
        assert set(await asyncio.gather(*(close_code(sockets[r], 5) for r in stranded))) == {None}
        sockets |= await open_many(b.ws_url, {robot_id: tokens[robot_id] for robot_id in stranded})
        await asyncio.gather(*(round_trip(sockets[robot_id], 4) for robot_id in stranded))
        assert await asyncio.to_thread(wait_for, lambda: fleet_counts() == full, 5), fleet_counts()
        info = (await asyncio.to_thread(http_get, f"{b.base_url}/api/telemetry/info"))[1]
        assert {key: info[key] for key in full} == full

        # B is stopped: every one of its 200 sessions gets 1001 and a server_shutdown event.
        mark = last_event_id(client)
        b.signal(signal.SIGTERM)
        codes = await asyncio.gather(*(close_code(ws) for ws in sockets.values()))
        assert codes == [1001] * len(tokens)
        assert await asyncio.to_thread(b.wait, 20) == 0
        closed = [event["payload"] for _, event in stream_events(client, "telemetry.connection_closed", after=mark)]
        assert sorted(event["robot_id"] for event in closed) == sorted(tokens)
        assert {(event["reason"], event["close_code"]) for event in closed} == {("server_shutdown", 1001)}
        assert fleet_counts()["active_connections"] == 0
        dashboard.task.cancel()
    finally:
        for server in (a, b, cluster):
            server.stop()
    assert_no_secret_in_logs([a.log_path, b.log_path, cluster.log_path], [*tokens.values(), api_token])
