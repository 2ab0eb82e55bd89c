"""The live fleet view: the dashboard WebSocket, its fan-out with backpressure, and the page.

Robots' frames reach dashboards through one channel-layer group, "fleet.dashboard". Each daphne
process's ingest flusher sends one coalesced "fleet.batch" (latest frames and presence changes)
per flush interval; the aggregation sends "counters.update" after each run. So the group carries a
few messages a second per process, whatever the robot count.

The group lives on the "fanout" channel layer (Redis Pub/Sub, see settings.CHANNEL_LAYERS): a
process takes each message off its subscription in one read, and the consumer's handlers only merge
it into dicts, so nothing queues up in the process however busy it is.

Backpressure: a dashboard acknowledges each `sync` message it receives. A consumer sends what
arrives at once while fewer than MAX_UNACKED syncs are outstanding; otherwise, until the client
catches up, it keeps only the latest frame of each robot (counting what it replaced in
telemetry_fanout_coalesced_total). Memory per dashboard is therefore bounded by the number of
robots, and a dashboard that stops reading (acks nothing for TELEMETRY_DASHBOARD_STALL_TIMEOUT) is
closed with 4008.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from prometheus_client.core import CounterMetricFamily

from fleet.redis import get_async_client, get_client
from telemetry import latest, presence
from telemetry.models import Alert, Robot

logger = logging.getLogger(__name__)

GROUP = "fleet.dashboard"
FANOUT_LAYER = "fanout"  # settings.CHANNEL_LAYERS: Redis Pub/Sub
WATCH_INTERVAL = 0.1  # how often a stalled dashboard is looked for
MAX_UNACKED = 2
CLOSE_STALLED = 4008
COALESCED_KEY = "telemetry:fanout:coalesced_total"


@database_sync_to_async
def _staff_user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active or not token.user.is_staff:
        return None
    return token.user


@database_sync_to_async
def _robot_rows() -> list[dict]:
    return list(Robot.objects.order_by("robot_id").values("robot_id", "last_seen_at"))


@database_sync_to_async
def _active_alerts() -> list[dict]:
    """Active alerts as `alert` messages show them (timestamp: when raised)."""
    rows = Alert.objects.filter(cleared_at=None).order_by("raised_at", "id")
    fields = ("rule__name", "robot__robot_id", "rule__metric", "value", "rule__threshold", "raised_at")
    return [
        {"rule": rule, "robot_id": robot_id, "metric": metric, "value": value, "threshold": threshold,
         "timestamp": raised_at.timestamp()}
        for rule, robot_id, metric, value, threshold, raised_at in rows.values_list(*fields)
    ]  # fmt: skip


async def build_snapshot() -> dict:
    """Every robot's state as the fleet knows it right now."""
    rows = await _robot_rows()
    robot_ids = [row["robot_id"] for row in rows]
    client = get_async_client()
    states = await presence.arobot_states(robot_ids, client)
    values = await latest.alatest_metrics_many(robot_ids, client)
    robots = []
    for row in rows:
        robot_id = row["robot_id"]
        value = values.get(robot_id)
        seen = row["last_seen_at"].timestamp() if row["last_seen_at"] else None
        if value and (seen is None or value["reported_at"] > seen):
            # last_seen_at is written in batches; the latest frame may be newer.
            seen = value["reported_at"]
        robots.append(
            {
                "robot_id": robot_id,
                **states.get(robot_id, {"connected": False, "reporting": False}),
                "last_seen_at": seen,
                "metrics": {name: value[name] for name in latest.METRICS} if value else None,
            }
        )
    return {"type": "snapshot", "robots": robots, "alerts": await _active_alerts()}


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = FANOUT_LAYER

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_staff):
            token = parse_qs(self.scope.get("query_string", b"").decode()).get("token", [""])[0]
            user = await _staff_user_for_token(token) if token else None
        if user is None:
            await self.close()  # before accept: the handshake gets HTTP 403
            return
        self.pending_frames: dict[str, dict] = {}
        self.pending_presence: dict[str, dict] = {}
        self.pending_counters: list | None = None
        self.pending_alerts: list[dict] = []  # never coalesced: each raise and clear is shown
        self.coalesced = 0
        self.sync_sent = 0
        self.sync_acked = 0
        self.waiting_since: float | None = None  # when the oldest unacknowledged sync was sent
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        await self.send_json(await build_snapshot())
        self.watcher = asyncio.create_task(self._watch_forever())

    async def disconnect(self, code: int) -> None:
        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.cancel()
            await self._report_coalesced()
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "ack" and isinstance(content.get("sync"), int):
            self.sync_acked = max(self.sync_acked, min(content["sync"], self.sync_sent))
            self.waiting_since = None if self.sync_acked == self.sync_sent else time.monotonic()
            await self._send_if_caught_up()

    # Group messages, named after their type.
    async def fleet_batch(self, event: dict) -> None:
        pending = self.pending_frames
        for frame in event["frames"]:
            if frame["robot_id"] in pending:
                self.coalesced += 1
            pending[frame["robot_id"]] = frame
        for robot in event["robots"]:
            self.pending_presence[robot["robot_id"]] = robot
        await self._send_if_caught_up()

    async def fleet_alerts(self, event: dict) -> None:
        self.pending_alerts += event["alerts"]
        await self._send_if_caught_up()

    async def counters_update(self, event: dict) -> None:
        self.pending_counters = event["counters"]
        await self._send_if_caught_up()

    async def _send_if_caught_up(self) -> None:
        """Send what is pending at once, unless MAX_UNACKED syncs await their ack (then keep coalescing)."""
        if self.sync_sent - self.sync_acked < MAX_UNACKED:
            await self._send_pending()
        if self.coalesced >= 1000:
            await self._report_coalesced()

    async def _watch_forever(self) -> None:
        """Close a dashboard that stopped acknowledging."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            stalled = self.sync_sent - self.sync_acked >= MAX_UNACKED
            if stalled and now - self.waiting_since > settings.TELEMETRY_DASHBOARD_STALL_TIMEOUT:
                await self.close(code=CLOSE_STALLED)
                return

    async def _send_pending(self) -> None:
        if not (
            self.pending_frames or self.pending_presence or self.pending_counters is not None or self.pending_alerts
        ):
            return
        frames, self.pending_frames = self.pending_frames, {}
        states, self.pending_presence = self.pending_presence, {}
        counters, self.pending_counters = self.pending_counters, None
        alert_messages, self.pending_alerts = self.pending_alerts, []
        for robot in states.values():
            await self.send_json({"type": "presence", **robot})
        for frame in frames.values():
            await self.send_json({"type": "telemetry", **frame})
        if counters is not None:
            await self.send_json({"type": "counters", "counters": counters})
        for alert in alert_messages:
            await self.send_json(alert)
        self.sync_sent += 1
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        await self.send_json({"type": "sync", "sync": self.sync_sent})

    async def _report_coalesced(self) -> None:
        count, self.coalesced = self.coalesced, 0
        if count:
            try:
                await get_async_client().incrby(COALESCED_KEY, count)
            except Exception as exc:  # a metric must not break the dashboard
                logger.warning("could not record %d coalesced frames: %s", count, exc)


def push_changed_counters(sender, run_id: str, **kwargs) -> None:
    """Receiver of metrics' aggregation_completed: send the counters the run changed to every dashboard."""
    from metrics.aggregation import changed_counters

    counters = [{"name": c.name, "labels": c.labels, "value": c.value} for c in changed_counters(run_id)]
    if not counters:
        return
    try:
        message = {"type": "counters.update", "counters": counters}
        async_to_sync(get_channel_layer(FANOUT_LAYER).group_send)(GROUP, message)
    except Exception as exc:  # dashboards catch up on their next snapshot; the job must not fail
        logger.warning("could not push counters to dashboards: %s", exc)


class FanoutCollector:
    """telemetry_fanout_coalesced_total, fleet-wide from Redis."""

    def collect(self):
        family = CounterMetricFamily(
            "telemetry_fanout_coalesced", "Robot frames replaced by a newer one before a slow dashboard received them."
        )
        try:
            family.add_metric([], int(get_client().get(COALESCED_KEY) or 0))
        except Exception as exc:
            logger.warning("telemetry_fanout_coalesced_total unavailable: %s", exc)
            return
        yield family


@staff_member_required
def dashboard_page(request: HttpRequest) -> HttpResponse:
    return render(request, "telemetry/dashboard.html")


websocket_urlpatterns = [
    # Browsers authenticate with their session, so the Origin must be one of ours.
    path("api/telemetry/fleet/ws", AllowedHostsOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi()))),
]
