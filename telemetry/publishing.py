"""When `metrics_published` is sent: at most once per robot per TELEMETRY_PUBLISH_MIN_INTERVAL, fleet-wide.

The event shares `brain:events:stream` with every other module's events, and the stream is trimmed
by length, so a flood of it would trim the others away. The gate is one `SET key NX PX` per robot in
Redis: whichever process (REST read or, with TELEMETRY_PUBLISH_ON_INGEST, a robot's socket) sets it
first sends the event; the others see the key and send nothing until it expires. REST reads and
ingest share the key, so a robot gets one event per interval whichever path asks. An interval of 0
means no gate (every read or frame is an event).
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis
from django.conf import settings

from fleet.redis import get_async_client, get_client
from telemetry.signals import metrics_published

logger = logging.getLogger(__name__)

GATE_KEY = "telemetry:metrics_published:{robot_id}"

# The ingest path's gate calls run as tasks; keep them referenced until they finish.
_pending: set[asyncio.Task] = set()


def _interval_ms() -> int:
    return max(1, round(settings.TELEMETRY_PUBLISH_MIN_INTERVAL * 1000))


def claim(robot_id: str) -> bool:
    """True when this caller may send the robot's event now (and no other may until the interval ends)."""
    if settings.TELEMETRY_PUBLISH_MIN_INTERVAL <= 0:
        return True
    return bool(get_client().set(GATE_KEY.format(robot_id=robot_id), 1, nx=True, px=_interval_ms()))


async def aclaim(robot_id: str) -> bool:
    if settings.TELEMETRY_PUBLISH_MIN_INTERVAL <= 0:
        return True
    return bool(await get_async_client().set(GATE_KEY.format(robot_id=robot_id), 1, nx=True, px=_interval_ms()))


def publish_on_read(sender: type, robot_id: str, metrics: dict[str, float]) -> None:
    """From a REST read of the robot's metrics; a Redis error skips the event, never the read."""
    try:
        claimed = claim(robot_id)
    except redis.RedisError as exc:
        logger.warning("metrics_published of %s not sent: %s", robot_id, exc)
        return
    if claimed:
        metrics_published.send(sender=sender, robot_id=robot_id, metrics=dict(metrics), timestamp=time.time())


def publish_on_ingest(sender: type, robot_id: str, metrics: dict[str, float], now: float, connection_id: str) -> None:
    """From an accepted frame, in the event loop: the ack never waits for the gate."""
    if settings.TELEMETRY_PUBLISH_MIN_INTERVAL <= 0:
        metrics_published.send(
            sender=sender, robot_id=robot_id, metrics=dict(metrics), timestamp=now, connection_id=connection_id
        )
        return

    async def gate() -> None:
        try:
            if not await aclaim(robot_id):
                return
        except redis.RedisError as exc:
            logger.warning("metrics_published of %s not sent: %s", robot_id, exc)
            return
        metrics_published.send(
            sender=sender, robot_id=robot_id, metrics=dict(metrics), timestamp=now, connection_id=connection_id
        )

    task = asyncio.get_running_loop().create_task(gate())
    _pending.add(task)
    task.add_done_callback(_pending.discard)
