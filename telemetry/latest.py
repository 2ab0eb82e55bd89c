"""Each robot's latest accepted telemetry, in Redis: one hash, `telemetry:latest`, robot_id -> JSON."""

from __future__ import annotations

import json

import redis

from fleet.redis import get_client
from telemetry.frames import METRICS

LATEST = "telemetry:latest"


def encode(metrics: dict[str, float], reported_at: float, seq: int | None) -> str:
    return json.dumps({**{name: metrics[name] for name in METRICS}, "reported_at": reported_at, "seq": seq})


def decode(raw: bytes | str | None) -> dict | None:
    return None if raw is None else json.loads(raw)


def write_latest(pipe, values: dict[str, str]) -> None:
    """Queue on `pipe` the encoded latest values of several robots."""
    if values:
        pipe.hset(LATEST, mapping=values)


def latest_metrics(robot_id: str, client: redis.Redis | None = None) -> dict | None:
    """The metrics, "reported_at" and "seq" of the robot's latest accepted frame, or None."""
    return decode((client or get_client()).hget(LATEST, robot_id))


def latest_metrics_many(robot_ids: list[str], client: redis.Redis | None = None) -> dict[str, dict | None]:
    if not robot_ids:
        return {}
    values = (client or get_client()).hmget(LATEST, robot_ids)
    return {robot_id: decode(raw) for robot_id, raw in zip(robot_ids, values, strict=True)}
