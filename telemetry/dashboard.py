"""The live fleet view's WebSocket: a snapshot, then what the fan-out sends, with backpressure.

A dashboard acks each `sync`; past MAX_UNACKED unacked syncs it keeps only each robot's latest
frame, and one that acks nothing for TELEMETRY_DASHBOARD_STALL_TIMEOUT is closed with 4008.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from fleet import fanout
from fleet.redis import get_async_client
from telemetry import latest, presence
from telemetry.frames import METRICS
from telemetry.models import Alert, Robot

logger = logging.getLogger(__name__)

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


def _active_alerts() -> list[dict]:
    """Active alerts as `alert` messages show them (timestamp: when raised)."""
    rows = Alert.objects.filter(cleared_at=None).order_by("raised_at", "id")
    fields = ("rule__name", "robot__robot_id", "rule__metric", "value", "rule__threshold", "raised_at")
    return [
        {"rule": rule, "robot_id": robot_id, "metric": metric, "value": value, "threshold": threshold,
         "timestamp": raised_at.timestamp()}
        for rule, robot_id, metric, value, threshold, raised_at in rows.values_list(*fields)
    ]  # fmt: skip


@database_sync_to_async
def build_snapshot() -> dict:
    """Every robot's state as the fleet knows it right now."""
    rows = list(Robot.objects.order_by("robot_id").values("robot_id", "last_seen_at"))
    robot_ids = [row["robot_id"] for row in rows]
    states = presence.robot_states(robot_ids)
    values = latest.latest_metrics_many(robot_ids)
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
                "metrics": {name: value[name] for name in METRICS} if value else None,
            }
        )
    return {"type": "snapshot", "robots": robots, "alerts": _active_alerts()}


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = fanout.LAYER

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
        await self.channel_layer.group_add(fanout.GROUP, self.channel_name)
        await self.accept()
        await self.send_json(await build_snapshot())
        self.watcher = asyncio.create_task(self._watch_forever())

    async def disconnect(self, code: int) -> None:
        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.cancel()
            await self._report_coalesced()
        await self.channel_layer.group_discard(fanout.GROUP, self.channel_name)

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
