"""Alerts through real daphne processes: raised once and cleared once, across two processes and a restart."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest
from channels.db import database_sync_to_async
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect

from telemetry.models import AlertRule
from tests.servers import ServerProcess
from tests.test_robot_ws_e2e import GOOD, robot_socket, stream_events

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Robots go stale after 1 s, so `not_reporting` can be shown within seconds.
ENV = {"TELEMETRY_STALE_AFTER": "1"}


@pytest.fixture
def api_token(operator) -> str:
    return Token.objects.create(user=operator).key


def enable(name: str, metric: str, op: str, threshold: float, clear_threshold: float | None = None) -> None:
    AlertRule.objects.all().update(enabled=False)
    fields = {"metric": metric, "op": op, "threshold": threshold, "for_seconds": 1, "clear_threshold": clear_threshold}
    AlertRule.objects.update_or_create(name=name, defaults={**fields, "enabled": True})


class Dashboard:
    """A dashboard WebSocket that acknowledges its syncs and keeps the alert messages it receives."""

    def __init__(self, server: ServerProcess, token: str) -> None:
        self.url = f"{server.ws_url}/api/telemetry/fleet/ws?token={token}"
        self.origin = server.base_url
        self.alerts: list[dict] = []

    async def __aenter__(self) -> Dashboard:
        self.socket = await connect(self.url, additional_headers={"Origin": self.origin}, open_timeout=5)
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if message["type"] == "sync":
                await self.socket.send(json.dumps({"type": "ack", "sync": message["sync"]}))
            elif message["type"] == "alert":
                self.alerts.append(message)

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await self.socket.close()


def active_alerts(server: ServerProcess, token: str) -> list[dict]:
    request = urllib.request.Request(
        f"{server.base_url}/api/telemetry/alerts/?active=true&robot_id=r2d2",
        headers={"Authorization": f"Token {token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["results"]


async def stream(ws, seconds: float, **metrics: float) -> None:
    """Send a frame every 100 ms for `seconds`, each acknowledged."""
    deadline = time.monotonic() + seconds
    seq = int(time.time() * 1000)
    while time.monotonic() < deadline:
        seq += 1
        await ws.send(json.dumps({"type": "telemetry", "seq": seq, **GOOD, **metrics}))
        assert json.loads(await ws.recv())["type"] == "ack"
        await asyncio.sleep(0.1)


async def until(predicate, within: float = 5.0):
    """Poll `predicate` while the dashboard's reader runs on this loop; its last value."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


def kinds(alerts: list[dict]) -> list[tuple[str, str]]:
    return [(alert["rule"], alert["state"]) for alert in alerts]


async def test_battery_low_is_raised_once_and_cleared_once_across_two_processes_and_a_restart(
    r2d2, api_token, tmp_path
):
    await database_sync_to_async(enable)("battery_low", "battery_percentage", "lt", 20, clear_threshold=25)
    a, b = ServerProcess.daphne(tmp_path, **ENV), ServerProcess.daphne(tmp_path, **ENV)
    try:
        async with Dashboard(a, api_token) as dashboard:
            async with robot_socket(b, "r2d2", r2d2.token) as ws:
                await stream(ws, 2.0, battery_percentage=10)
                assert await until(lambda: dashboard.alerts)
            # The robot moves to the other process, then that one restarts: the alert stays raised, once.
            async with robot_socket(a, "r2d2", r2d2.token) as ws:
                await stream(ws, 1.5, battery_percentage=12)
            b.stop()
            b = ServerProcess.daphne(tmp_path, **ENV)
            async with robot_socket(b, "r2d2", r2d2.token) as ws:
                await stream(ws, 1.5, battery_percentage=15)
                [active] = await database_sync_to_async(active_alerts)(a, api_token)
                assert (active["rule"], active["value"], active["peak"]) == ("battery_low", 10.0, 10.0)
                # Between threshold and clear threshold: still raised.
                await stream(ws, 1.0, battery_percentage=22)
                await stream(ws, 1.0, battery_percentage=50)
                assert await until(lambda: len(dashboard.alerts) == 2)
            await asyncio.sleep(1.5)  # a few more flushes and ticks in both processes: nothing more
        raised = stream_events("telemetry.alert_raised")
        cleared = stream_events("telemetry.alert_cleared")
        assert [(e["rule"], e["robot_id"], e["metric"], e["value"], e["threshold"]) for e in raised] == [
            ("battery_low", "r2d2", "battery_percentage", 10.0, 20.0)
        ]
        assert [(e["rule"], e["robot_id"], e["value"], e["threshold"]) for e in cleared] == [
            ("battery_low", "r2d2", 50.0, 25.0)
        ]
        assert kinds(dashboard.alerts) == [("battery_low", "raised"), ("battery_low", "cleared")]
        assert await database_sync_to_async(active_alerts)(b, api_token) == []
    finally:
        a.stop()
        b.stop()


async def test_not_reporting_is_raised_once_for_a_silent_robot_and_cleared_once_when_it_reports(
    r2d2, api_token, tmp_path
):
    await database_sync_to_async(enable)("not_reporting", "reporting", "is_false", 0)
    a, b = ServerProcess.daphne(tmp_path, **ENV), ServerProcess.daphne(tmp_path, **ENV)
    try:
        async with Dashboard(a, api_token) as dashboard:
            async with robot_socket(b, "r2d2", r2d2.token) as ws:
                await stream(ws, 0.5)
            # Silent and gone: stale after 1 s, raised 1 s later, by one of the two processes.
            assert await until(lambda: dashboard.alerts, within=6)
            b.stop()
            b = ServerProcess.daphne(tmp_path, **ENV)
            await asyncio.sleep(2.0)  # the restarted process ticks too: nothing is raised again
            [active] = await database_sync_to_async(active_alerts)(a, api_token)
            assert active["rule"] == "not_reporting"
            async with robot_socket(b, "r2d2", r2d2.token) as ws:
                await stream(ws, 1.5)
                assert await until(lambda: len(dashboard.alerts) == 2)
            await asyncio.sleep(1.0)
        assert kinds(dashboard.alerts) == [("not_reporting", "raised"), ("not_reporting", "cleared")]
        [raised] = stream_events("telemetry.alert_raised")
        [cleared] = stream_events("telemetry.alert_cleared")
        assert (raised["rule"], raised["robot_id"], raised["metric"]) == ("not_reporting", "r2d2", "reporting")
        assert raised["value"] >= 2.0  # seconds since its last frame
        assert (cleared["rule"], cleared["robot_id"]) == ("not_reporting", "r2d2")
        assert await database_sync_to_async(active_alerts)(a, api_token) == []
    finally:
        a.stop()
        b.stop()
