"""The ingest path: accept a validated frame in memory, then flush in batches.

Per frame the consumer only validates, acks and calls `accept_frame`, which updates this process's
Flusher (plain dicts, no I/O). The process loop (telemetry.connections) calls the Flusher:
- every TELEMETRY_FLUSH_INTERVAL, `flush()`: one Redis pipeline with the changed robots' latest values,
  their last-frame times (reporting), the frame counters and the lease changes; then one channel-layer
  message ("fleet.batch") to the dashboards with the latest frame of each changed robot (coalesced)
  and the presence changes;
- about once a second, `start_db_flush()`: in a worker thread, one transaction that inserts the history
  samples and the new sessions, closes ended sessions and stamps `last_seen_at`.

Durability: an ack means the frame was validated and will be stored. A crash (SIGKILL, power) loses
what is still buffered: at most one flush interval of latest values and counters, and about a second
of downsampled history samples and session bookkeeping. Backfill batches are the exception: their
samples are committed before the ack (group commit with the next database flush), because the robot
deletes its buffer when it sees the ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import OperationalError, transaction

from fleet.redis import get_async_client
from telemetry import latency, latest, presence, publishing, rollups
from telemetry.dashboard import FANOUT_LAYER
from telemetry.dashboard import GROUP as DASHBOARD_GROUP
from telemetry.frames import Batch, Telemetry
from telemetry.models import Robot, RobotSession, TelemetrySample

logger = logging.getLogger(__name__)

FRAMES_KEY = "telemetry:frames"  # hash: accepted, rejected (fleet-wide totals for Prometheus)
DB_FLUSH_INTERVAL = 1.0
# While the database is unreachable, keep at most this many samples; beyond it, drop the oldest.
MAX_PENDING_SAMPLES = 100_000


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass
class DbBatch:
    samples: list[TelemetrySample] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    new_sessions: dict[str, dict] = field(default_factory=dict)
    closed_sessions: dict[str, dict] = field(default_factory=dict)
    waiters: list[asyncio.Future] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.samples or self.seen or self.new_sessions or self.closed_sessions or self.waiters)


def write_db_batch(batch: DbBatch, seen_at: datetime) -> None:
    """One transaction: new sessions, closed sessions, history samples, last_seen_at."""
    with transaction.atomic():
        # A robot deleted while connected must not sink the whole batch on its foreign key.
        pks = {fields["robot_id"] for fields in batch.new_sessions.values()} | {s.robot_id for s in batch.samples}
        existing = set(Robot.objects.filter(pk__in=pks).values_list("pk", flat=True)) if pks else set()
        sessions = [RobotSession(**fields) for fields in batch.new_sessions.values() if fields["robot_id"] in existing]
        if sessions:
            RobotSession.objects.bulk_create(sessions)
        for connection_id, fields in batch.closed_sessions.items():
            RobotSession.objects.filter(connection_id=connection_id).update(**fields)
        samples = [sample for sample in batch.samples if sample.robot_id in existing]
        if samples:
            # A sample already stored (a backfill batch resent because its ack was lost) is skipped,
            # in the samples and in their rollups.
            rollups.store_samples(samples)
        seen = sorted(batch.seen)
        for start in range(0, len(seen), 500):
            Robot.objects.filter(robot_id__in=seen[start : start + 500]).update(last_seen_at=seen_at)


class Flusher:
    """This process's buffered ingest state, bound to one event loop."""

    def __init__(self) -> None:
        # Latest accepted frame per robot known to this process, and which changed since the last flush.
        self.latest: dict[str, Telemetry] = {}
        self.changed: set[str] = set()
        # Server time of the oldest frame among `changed`: the fan-out lag is measured from it.
        self.changed_since: float | None = None
        # Server time of each robot's last accepted frame, not yet written to Redis.
        self.seen: dict[str, float] = {}
        # Robots this process saw reporting, with their last frame's server time (for stale transitions).
        self.reporting: dict[str, float] = {}
        self.accepted = 0
        self.rejected = 0
        self.refresh: list[tuple[str, str]] = []
        self.release: list[tuple[str, str]] = []
        self.presence_changed: set[str] = set()
        self.sampled_at: dict[str, float] = {}
        self.published_at: dict[str, float] = {}
        self.db = DbBatch()
        self.db_task: asyncio.Task | None = None
        self.db_flushed_at = 0.0
        self._redis_failing = False
        self._fanout_failing = False

    # --- in memory, per frame ---------------------------------------------------------------

    def idle(self) -> bool:
        return not (
            self.changed
            or self.seen
            or self.accepted
            or self.rejected
            or self.refresh
            or self.release
            or self.presence_changed
            or self.db
            or self.db_task
            or self.reporting
        )

    def urgent_db(self) -> bool:
        return bool(self.db.waiters)

    # --- flushing ---------------------------------------------------------------------------

    async def flush(self) -> set[str]:
        """Write what changed to Redis in one pipeline, then fan out; the robots whose latest values were written."""
        if not (self.changed or self.seen or self.accepted or self.rejected or self.refresh or self.release):
            if not self.presence_changed:
                return set()
        changed, self.changed = self.changed, set()
        changed_since, self.changed_since = self.changed_since, None
        seen, self.seen = self.seen, {}
        accepted, rejected = self.accepted, self.rejected
        self.accepted = self.rejected = 0
        release, self.release = self.release, []
        # A socket that closed since its refresh was queued must not get its lease back.
        released = {connection_id for connection_id, _ in release}
        refresh = [lease for lease in dict.fromkeys(self.refresh) if lease[0] not in released]
        self.refresh = []
        robots = sorted(self.presence_changed)
        self.presence_changed = set()
        values = {robot_id: self._encode(robot_id) for robot_id in changed}

        pipe = get_async_client().pipeline(transaction=False)
        latest.write_latest(pipe, values)
        presence.mark_reporting(pipe, seen)
        if accepted:
            pipe.hincrby(FRAMES_KEY, "accepted", accepted)
        if rejected:
            pipe.hincrby(FRAMES_KEY, "rejected", rejected)
        presence.release_leases(pipe, release)
        if refresh:
            presence.refresh_leases(pipe, refresh)
        if robots:
            pipe.zmscore(presence.CONNECTED, robots)
            pipe.zmscore(presence.REPORTING, robots)
        started = time.perf_counter()
        try:
            results = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            # Keep everything for the next attempt: nothing counted is lost during an outage.
            self.changed |= changed
            if changed_since is not None:  # older than any frame taken meanwhile
                self.changed_since = changed_since
            for robot_id, at in seen.items():
                self.seen[robot_id] = max(at, self.seen.get(robot_id, 0.0))
            self.accepted += accepted
            self.rejected += rejected
            self.refresh = list(dict.fromkeys(refresh + self.refresh))
            self.release = release + self.release
            self.presence_changed.update(robots)
            if not self._redis_failing:
                self._redis_failing = True
                logger.warning("telemetry flush: Redis unreachable (%s); keeping state in memory", exc)
            return set()
        latency.FLUSH_DURATION.labels("redis").observe(time.perf_counter() - started)
        if self._redis_failing:
            self._redis_failing = False
            logger.warning("telemetry flush: Redis reachable again")
            # A sweep during the outage may have announced these robots gone; they are back.
            self.presence_changed.update(robot_id for _, robot_id in refresh)
        if await self._fan_out(changed, robots, results[-2:] if robots else None) and changed_since is not None:
            latency.FANOUT_LAG.observe(time.time() - changed_since)
        return changed

    def _encode(self, robot_id: str) -> str:
        frame = self.latest[robot_id]
        return latest.encode(frame.metrics, frame.reported_at, frame.seq)

    async def _fan_out(self, changed: set[str], robots: list[str], scores: list | None) -> bool:
        """One channel-layer message per flush: each changed robot's latest frame and the presence changes.

        One message, not one per kind: every message costs each process with dashboards a receive
        and a dispatch, so per flush the fan-out costs the same whatever changed.
        """
        layer = get_channel_layer(FANOUT_LAYER)
        if layer is None or not (changed or scores is not None):
            return False
        frames = [
            {
                "robot_id": robot_id,
                "seq": self.latest[robot_id].seq,
                "reported_at": self.latest[robot_id].reported_at,
                "metrics": self.latest[robot_id].metrics,
            }
            for robot_id in sorted(changed)
        ]
        states = presence._states(robots, scores[0], scores[1], time.time()) if scores is not None else {}
        message = {"type": "fleet.batch", "frames": frames, "robots": [{"robot_id": r, **states[r]} for r in robots]}
        try:
            await layer.group_send(DASHBOARD_GROUP, message)
        except Exception as exc:  # the channel layer raises its own and redis' errors
            if not self._fanout_failing:
                self._fanout_failing = True
                logger.warning("telemetry fan-out failed (%s); dashboards will catch up", exc)
            return False
        self._fanout_failing = False
        return True

    def forget_stale(self, now: float) -> None:
        """Forget robots whose last frame here is older than TELEMETRY_STALE_AFTER (presence.asweep announces them)."""
        cutoff = now - settings.TELEMETRY_STALE_AFTER
        for robot_id in [robot_id for robot_id, at in self.reporting.items() if at <= cutoff]:
            del self.reporting[robot_id]

    async def sweep(self) -> None:
        """Take the fleet's time-driven presence changes (expired leases, stale robots) into the next fan-out."""
        try:
            self.presence_changed.update(await presence.asweep())
        except (redis.RedisError, OSError):
            pass  # The flush that follows reports the outage; the next sweep catches up.

    def start_db_flush(self, now: float, force: bool = False) -> asyncio.Task | None:
        """Write the buffered database batch in a worker thread, one batch at a time."""
        if self.db_task is not None or not self.db:
            return self.db_task
        if not force and not self.urgent_db() and now - self.db_flushed_at < DB_FLUSH_INTERVAL:
            return None
        self.db_flushed_at = now
        batch, self.db = self.db, DbBatch()
        self.db_task = asyncio.ensure_future(self._write_db(batch))
        return self.db_task

    async def _write_db(self, batch: DbBatch) -> None:
        started = time.perf_counter()
        try:
            await database_sync_to_async(write_db_batch)(batch, _utc(time.time()))
            latency.FLUSH_DURATION.labels("db").observe(time.perf_counter() - started)
        except OperationalError as exc:
            # The database is busy or away: keep the batch and try again on the next flush.
            logger.warning("telemetry history write failed (%s); retrying", exc)
            self._requeue(batch)
        except Exception as exc:
            logger.exception("telemetry history write failed; dropping %d samples", len(batch.samples))
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        else:
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(None)
        finally:
            self.db_task = None

    def _requeue(self, batch: DbBatch) -> None:
        pending = self.db
        pending.samples[:0] = batch.samples
        if len(pending.samples) > MAX_PENDING_SAMPLES:
            dropped = len(pending.samples) - MAX_PENDING_SAMPLES
            del pending.samples[:dropped]
            logger.warning("telemetry history buffer full; dropped the %d oldest samples", dropped)
        pending.seen |= batch.seen
        pending.new_sessions = {**batch.new_sessions, **pending.new_sessions}
        for connection_id, fields in batch.closed_sessions.items():
            pending.closed_sessions.setdefault(connection_id, fields)
        pending.waiters[:0] = batch.waiters

    async def drain(self) -> None:
        """Flush everything now (shutdown, tests): Redis, then the database."""
        await self.flush()
        while self.db_task is not None:
            await self.db_task
        task = self.start_db_flush(time.monotonic(), force=True)
        if task is not None:
            await task

    # --- sessions -----------------------------------------------------------------------------

    def open_session(self, connection_id: str, robot_pk: int, connected_at: float) -> None:
        self.db.new_sessions[connection_id] = {
            "connection_id": connection_id,
            "robot_id": robot_pk,
            "connected_at": _utc(connected_at),
        }

    def close_session(self, connection_id: str, fields: dict) -> None:
        fields = {**fields, "disconnected_at": _utc(fields["disconnected_at"])}
        pending = self.db.new_sessions.get(connection_id)
        if pending is not None:
            pending.update(fields)
        else:
            self.db.closed_sessions[connection_id] = fields


def accept_frame(flusher: Flusher, connection, frame: Telemetry, now: float, backfill: bool = False) -> None:
    """Take one validated frame into this process's state. No I/O: the flusher writes it out."""
    robot_id = connection.robot_id
    flusher.accepted += 1
    current = flusher.latest.get(robot_id)
    if current is None or frame.reported_at >= current.reported_at:
        flusher.latest[robot_id] = frame
        if not flusher.changed:
            flusher.changed_since = now
        flusher.changed.add(robot_id)
    flusher.seen[robot_id] = now
    last = flusher.reporting.get(robot_id)
    if last is None or now - last > settings.TELEMETRY_STALE_AFTER:
        flusher.presence_changed.add(robot_id)
    flusher.reporting[robot_id] = now
    flusher.db.seen.add(robot_id)
    # Downsample by server time: a device clock that jumps back must not stop the history.
    if backfill or now - flusher.sampled_at.get(robot_id, float("-inf")) >= settings.TELEMETRY_SAMPLE_INTERVAL:
        if not backfill:
            flusher.sampled_at[robot_id] = now
        flusher.db.samples.append(
            TelemetrySample(
                robot_id=connection.robot_pk, reported_at=_utc(frame.reported_at), seq=frame.seq, **frame.metrics
            )
        )
    if not backfill:
        maybe_publish(flusher, connection, frame, now)


def accept_batch(flusher: Flusher, connection, batch: Batch, now: float) -> asyncio.Future | None:
    """Take a backfill batch; the returned future resolves once its samples are committed."""
    for frame in batch.frames:
        accept_frame(flusher, connection, frame, now, backfill=True)
    if not batch.frames:
        return None
    maybe_publish(flusher, connection, max(batch.frames, key=lambda frame: frame.reported_at), now)
    waiter = asyncio.get_running_loop().create_future()
    flusher.db.waiters.append(waiter)
    return waiter


def maybe_publish(flusher: Flusher, connection, frame: Telemetry, now: float) -> None:
    """With TELEMETRY_PUBLISH_ON_INGEST, send metrics_published through the fleet-wide gate (telemetry.publishing)."""
    if not settings.TELEMETRY_PUBLISH_ON_INGEST:
        return
    robot_id = connection.robot_id
    interval = settings.TELEMETRY_PUBLISH_MIN_INTERVAL
    # This process's own clock first, so the gate costs Redis one call per robot per interval, not per frame.
    if interval > 0 and now - flusher.published_at.get(robot_id, float("-inf")) < interval:
        return
    flusher.published_at[robot_id] = now
    publishing.publish_on_ingest(Flusher, robot_id, frame.metrics, now, connection.connection_id)


def frame_totals(client: redis.Redis) -> dict[str, int]:
    """Accepted and rejected frames, fleet-wide (every process INCRBYs its counts here)."""
    raw = client.hgetall(FRAMES_KEY)
    return {result: int(raw.get(result.encode(), 0)) for result in ("accepted", "rejected")}
