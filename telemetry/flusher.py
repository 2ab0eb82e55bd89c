"""The Redis flush: what the ingest buffer took in, written in one pipeline, then one fan-out message."""

from __future__ import annotations

import logging

import redis

from fleet import fanout
from fleet.redis import get_async_client
from telemetry import latest, presence
from telemetry.ingest import Changes, IngestBuffer

logger = logging.getLogger(__name__)

FRAMES_KEY = "telemetry:frames"  # hash: accepted, rejected (fleet-wide totals for Prometheus)


class Flusher:
    """Flushes one process's IngestBuffer; it remembers only whether Redis and the fan-out were failing."""

    def __init__(self) -> None:
        self.redis_failing = False
        self.fanout_failing = False

    async def flush(self, buffer: IngestBuffer) -> None:
        changes = buffer.take()
        if not (changes.writes() or changes.presence):
            return
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
        try:
            results = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            buffer.give_back(changes)
            if not self.redis_failing:
                self.redis_failing = True
                logger.warning("telemetry flush: Redis unreachable (%s); keeping state in memory", exc)
            return
        if self.redis_failing:
            self.redis_failing = False
            logger.warning("telemetry flush: Redis reachable again")
            # A sweep during the outage may have announced these robots gone; they are back.
            buffer.announce([robot_id for _, robot_id in changes.refresh])
        states = presence.states(changes.presence, *results[-2:]) if changes.presence else {}
        await self._fan_out(changes, states)

    async def _fan_out(self, changes: Changes, states: dict[str, dict[str, bool]]) -> None:
        """One message per flush, not one per kind: each costs every process with dashboards a receive."""
        if not (changes.frames or states):
            return
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
            return
        self.fanout_failing = False


def frame_totals(client: redis.Redis) -> dict[str, int]:
    """Accepted and rejected frames, fleet-wide (every process adds its counts here)."""
    raw = client.hgetall(FRAMES_KEY)
    return {result: int(raw.get(result.encode(), 0)) for result in ("accepted", "rejected")}
