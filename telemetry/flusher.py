"""The Redis flush: what the ingest buffer took in, written in one pipeline, then one fan-out message."""

from __future__ import annotations

import logging
import time

import redis

from fleet import fanout
from fleet.redis import get_async_client
from telemetry import latency, latest, presence
from telemetry.frames import Telemetry
from telemetry.ingest import Changes, IngestBuffer

logger = logging.getLogger(__name__)

FRAMES_KEY = "telemetry:frames"  # hash: accepted, rejected (fleet-wide totals for Prometheus)


class Flusher:
    """Flushes one process's IngestBuffer; it remembers only whether Redis and the fan-out were failing."""

    def __init__(self) -> None:
        self.redis_failing = False
        self.fanout_failing = False

    async def flush(self, buffer: IngestBuffer) -> dict[str, Telemetry]:
        """Write what the buffer took in; the latest frame of each robot whose values were written."""
        changes = buffer.take()
        if not (changes.writes() or changes.presence):
            return {}
        pipe = get_async_client().pipeline(transaction=False)
        latest.write_latest(
            pipe, {robot_id: latest.encode(f.metrics, f.reported_at, f.seq) for robot_id, f in changes.frames.items()}
        )
        presence.mark_reporting(pipe, changes.seen)
        if changes.accepted:
            pipe.hincrby(FRAMES_KEY, "accepted", changes.accepted)
        if changes.rejected:
            pipe.hincrby(FRAMES_KEY, "rejected", changes.rejected)
        presence.release_leases(pipe, changes.release)
        if changes.refresh:
            presence.refresh_leases(pipe, changes.refresh)
        if changes.presence:
            presence.queue_states(pipe, changes.presence)
        started = time.perf_counter()
        try:
            results = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            buffer.give_back(changes)
            if not self.redis_failing:
                self.redis_failing = True
                logger.warning("telemetry flush: Redis unreachable (%s); keeping state in memory", exc)
            return {}
        latency.FLUSH_DURATION.labels("redis").observe(time.perf_counter() - started)
        if self.redis_failing:
            self.redis_failing = False
            logger.warning("telemetry flush: Redis reachable again")
            # A sweep during the outage may have announced these robots gone; they are back.
            buffer.announce([robot_id for _, robot_id in changes.refresh])
        states = presence.states(changes.presence, *results[-2:]) if changes.presence else {}
        if await self._fan_out(changes, states) and changes.since is not None:
            latency.FANOUT_LAG.observe(time.time() - changes.since)
        return changes.frames

    async def _fan_out(self, changes: Changes, states: dict[str, dict[str, bool]]) -> bool:
        """One message per flush, not one per kind: each costs every process with dashboards a receive."""
        if not (changes.frames or states):
            return False
        frames = [
            {"robot_id": robot_id, "seq": f.seq, "reported_at": f.reported_at, "metrics": f.metrics}
            for robot_id, f in changes.frames.items()
        ]
        robots = [{"robot_id": robot_id, **state} for robot_id, state in states.items()]
        try:
            await fanout.asend({"type": "fleet.batch", "frames": frames, "robots": robots})
        except Exception as exc:  # the channel layer raises its own and redis' errors
            if not self.fanout_failing:
                self.fanout_failing = True
                logger.warning("telemetry fan-out failed (%s); dashboards will catch up", exc)
            return False
        self.fanout_failing = False
        return True


def frame_totals(client: redis.Redis) -> dict[str, int]:
    """Accepted and rejected frames, fleet-wide (every process adds its counts here)."""
    raw = client.hgetall(FRAMES_KEY)
    return {result: int(raw.get(result.encode(), 0)) for result in ("accepted", "rejected")}
