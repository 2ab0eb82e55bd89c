"""Each robot's latest accepted telemetry, in Redis: one hash, `telemetry:latest`, robot_id -> JSON.

The per-process flusher (telemetry.ingest) writes the changed robots in one HSET per flush
interval; readers (the REST API, the dashboard snapshot) read one field per robot.
"""

from __future__ import annotations

import json

import redis
import redis.asyncio

from fleet.redis import get_async_client, get_client

LATEST = "telemetry:latest"
METRICS = ("cpu_usage", "memory_usage", "network_latency_ms", "battery_percentage")


def encode(metrics: dict[str, float], reported_at: float, seq: int | None) -> str:
    return json.dumps({**{name: metrics[name] for name in METRICS}, "reported_at": reported_at, "seq": seq})


def decode(raw: bytes | str | None) -> dict | None:
    return None if raw is None else json.loads(raw)


def write_latest(pipe, values: dict[str, str]) -> None:
    """Queue on `pipe` the encoded latest values of several robots."""
    if values:
        pipe.hset(LATEST, mapping=values)


def latest_metrics(robot_id: str, client: redis.Redis | None = None) -> dict | None:
    """{"cpu_usage", "memory_usage", "network_latency_ms", "battery_percentage", "reported_at", "seq"} or None."""
    return decode((client or get_client()).hget(LATEST, robot_id))


async def alatest_metrics(robot_id: str, client: redis.asyncio.Redis | None = None) -> dict | None:
    return decode(await (client or get_async_client()).hget(LATEST, robot_id))


def latest_metrics_many(robot_ids: list[str], client: redis.Redis | None = None) -> dict[str, dict | None]:
    if not robot_ids:
        return {}
    values = (client or get_client()).hmget(LATEST, robot_ids)
    return {robot_id: decode(raw) for robot_id, raw in zip(robot_ids, values, strict=True)}


async def alatest_metrics_many(
    robot_ids: list[str], client: redis.asyncio.Redis | None = None
) -> dict[str, dict | None]:
    if not robot_ids:
        return {}
    values = await (client or get_async_client()).hmget(LATEST, robot_ids)
    return {robot_id: decode(raw) for robot_id, raw in zip(robot_ids, values, strict=True)}
