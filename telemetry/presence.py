"""Fleet-wide presence in Redis: who is connected (a live lease) and who is reporting (a recent frame).

Scores are Unix seconds and readers count only scores in the future, so the leases of a process
killed with -9 vanish within TELEMETRY_PRESENCE_TTL. Keys and lifecycle: docs/architecture.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis
import redis.asyncio
from django.conf import settings

from fleet.redis import get_async_client, get_client

logger = logging.getLogger(__name__)

LEASES = "telemetry:leases"
CONNECTED = "telemetry:connected"
REPORTING = "telemetry:reporting"
CONNECT_WINDOW = 60.0


def robot_leases_key(robot_id: str) -> str:
    return f"telemetry:robot:{robot_id}:leases"


def connects_key(robot_id: str) -> str:
    return f"telemetry:connects:{robot_id}"


# One round trip on connect: the sliding-window rate check and, when admitted, the lease.
# Only admitted handshakes count, so `retry_after` is exactly when the window frees a slot.
CONNECT_SCRIPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
local others = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call('ZADD', KEYS[4], 'GT', ARGV[6], ARGV[5])
return {1, '0', others}
"""

# Refresh many leases at once. ARGV: expiry, ttl_ms, then connection_id, robot_id pairs.
REFRESH_SCRIPT = """
local expiry = ARGV[1]
for i = 3, #ARGV, 2 do
  local conn, robot = ARGV[i], ARGV[i + 1]
  local per_robot = 'telemetry:robot:' .. robot .. ':leases'
  redis.call('ZADD', KEYS[1], expiry, conn)
  redis.call('ZADD', per_robot, expiry, conn)
  redis.call('PEXPIRE', per_robot, ARGV[2])
  redis.call('ZADD', KEYS[2], 'GT', expiry, robot)
end
return 1
"""

# Remove leases. ARGV: now, then connection_id, robot_id pairs. A robot stays connected while
# another of its leases (e.g. the connection that replaced this one) is alive.
RELEASE_SCRIPT = """
local now = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local conn, robot = ARGV[i], ARGV[i + 1]
  local per_robot = 'telemetry:robot:' .. robot .. ':leases'
  redis.call('ZREM', KEYS[1], conn)
  redis.call('ZREM', per_robot, conn)
  redis.call('ZREMRANGEBYSCORE', per_robot, '-inf', now)
  local top = redis.call('ZRANGE', per_robot, 0, 0, 'REV', 'WITHSCORES')
  if #top == 0 then
    redis.call('ZREM', KEYS[2], robot)
  else
    redis.call('ZADD', KEYS[2], top[2], robot)
  end
end
return 1
"""


# Presence changes that no socket close announces: robots whose last lease expired (their process
# died) and robots whose last frame just became older than TELEMETRY_STALE_AFTER. Atomic, so each
# change is handed to exactly one of the processes that sweep, however many there are.
SWEEP_SCRIPT = """
local now = tonumber(ARGV[1])
local cutoff = now - tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
local previous = tonumber(redis.call('GET', KEYS[3]) or cutoff)
local stale = {}
if cutoff > previous then
  stale = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. previous, cutoff)
end
if cutoff >= previous then
  redis.call('SET', KEYS[3], cutoff)
end
return {gone, stale}
"""
SWEPT = "telemetry:stale_swept_until"


async def asweep(client: redis.asyncio.Redis | None = None) -> list[str]:
    """Robots whose presence changed by time alone (lease expired, or gone stale) since the last sweep."""
    client = client or get_async_client()
    gone, stale = await client.eval(
        SWEEP_SCRIPT, 3, CONNECTED, REPORTING, SWEPT, time.time(), settings.TELEMETRY_STALE_AFTER
    )
    return sorted({robot_id.decode() for robot_id in (*gone, *stale)})


def _connected(score: float | None, now: float) -> bool:
    return score is not None and score > now


def _reporting(score: float | None, now: float) -> bool:
    return score is not None and score > now - settings.TELEMETRY_STALE_AFTER


def fleet_counts(client: redis.Redis | None = None) -> dict[str, int]:
    """Live leases, connected robots and reporting robots, fleet-wide. Raises redis.RedisError."""
    now = time.time()
    pipe = (client or get_client()).pipeline(transaction=False)
    pipe.zcount(LEASES, f"({now}", "+inf")
    pipe.zcount(CONNECTED, f"({now}", "+inf")
    pipe.zcount(REPORTING, f"({now - settings.TELEMETRY_STALE_AFTER}", "+inf")
    leases, connected, reporting = pipe.execute()
    return {"active_connections": int(leases), "robots_connected": int(connected), "robots_reporting": int(reporting)}


def queue_states(pipe, robot_ids: list[str]) -> None:
    """Queue on `pipe` the two reads that `states` turns into each robot's presence."""
    pipe.zmscore(CONNECTED, robot_ids)
    pipe.zmscore(REPORTING, robot_ids)


def states(robot_ids: list[str], connected: list, reporting: list) -> dict[str, dict[str, bool]]:
    """{robot_id: {"connected": bool, "reporting": bool}} from the replies of `queue_states`."""
    now = time.time()
    return {
        robot_id: {"connected": _connected(lease, now), "reporting": _reporting(seen, now)}
        for robot_id, lease, seen in zip(robot_ids, connected, reporting, strict=True)
    }


def robot_states(robot_ids: Iterable[str], client: redis.Redis | None = None) -> dict[str, dict[str, bool]]:
    """Each robot's presence. Raises redis.RedisError."""
    robot_ids = list(robot_ids)
    if not robot_ids:
        return {}
    pipe = (client or get_client()).pipeline(transaction=False)
    queue_states(pipe, robot_ids)
    return states(robot_ids, *pipe.execute())


def robot_states_or_none(robot_ids: list[str]) -> dict[str, dict[str, bool]] | None:
    """Each robot's presence, or None when Redis did not answer (pages then show it as unknown)."""
    try:
        return robot_states(robot_ids)
    except redis.RedisError as exc:
        logger.warning("presence unavailable: %s", exc)
        return None


async def admit(robot_id: str, connection_id: str, client: redis.asyncio.Redis | None = None) -> tuple[float, bool]:
    """Check the connect rate and take a lease, in one round trip.

    Returns (0, alone) when admitted, alone meaning the robot held no other live lease (so no older socket to
    replace); else (seconds to wait, False).
    """
    now = time.time()
    ttl = settings.TELEMETRY_PRESENCE_TTL
    client = client or get_async_client()
    admitted, retry_after, *others = await client.eval(
        CONNECT_SCRIPT,
        4,
        connects_key(robot_id),
        LEASES,
        robot_leases_key(robot_id),
        CONNECTED,
        now,
        CONNECT_WINDOW,
        settings.TELEMETRY_MAX_CONNECTS_PER_MINUTE,
        connection_id,
        robot_id,
        now + ttl,
        int(ttl * 1000),
    )
    if not int(admitted):
        return max(float(retry_after), 0.0), False
    return 0.0, int(others[0]) == 0


def _pairs(leases: Iterable[tuple[str, str]]) -> list[str]:
    return [value for pair in leases for value in pair]


def refresh_leases(pipe, leases: list[tuple[str, str]]) -> None:
    """Queue on `pipe` a refresh of (connection_id, robot_id) leases and a trim of expired members."""
    now = time.time()
    ttl = settings.TELEMETRY_PRESENCE_TTL
    if leases:
        pipe.eval(REFRESH_SCRIPT, 2, LEASES, CONNECTED, now + ttl, int(ttl * 1000), *_pairs(leases))
    pipe.zremrangebyscore(LEASES, "-inf", now)


def release_leases(pipe, leases: list[tuple[str, str]]) -> None:
    """Queue on `pipe` the removal of (connection_id, robot_id) leases."""
    if leases:
        pipe.eval(RELEASE_SCRIPT, 2, LEASES, CONNECTED, time.time(), *_pairs(leases))


def mark_reporting(pipe, seen: dict[str, float]) -> None:
    """Queue on `pipe` the server times of robots' last accepted frames."""
    if seen:
        pipe.zadd(REPORTING, seen, gt=True)


def live_connections(connection_ids: list[str], client: redis.Redis | None = None) -> set[str]:
    """Those of `connection_ids` that hold a live lease. Raises redis.RedisError."""
    if not connection_ids:
        return set()
    scores = (client or get_client()).zmscore(LEASES, connection_ids)
    now = time.time()
    return {
        connection_id for connection_id, score in zip(connection_ids, scores, strict=True) if _connected(score, now)
    }
