"""IngestBuffer: this process's accepted frames and connection changes, held in memory until flushed. No I/O."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from django.conf import settings

from telemetry import publishing
from telemetry.frames import Batch, Telemetry
from telemetry.history import DbBatch, utc
from telemetry.models import TelemetrySample


@dataclass
class Changes:
    """What one Redis flush writes; given back whole when Redis did not take it."""

    frames: dict[str, Telemetry] = field(default_factory=dict)  # the latest frame of each changed robot
    seen: dict[str, float] = field(default_factory=dict)  # server time of each robot's last frame
    accepted: int = 0
    rejected: int = 0
    refresh: list[tuple[str, str]] = field(default_factory=list)  # (connection_id, robot_id) leases
    release: list[tuple[str, str]] = field(default_factory=list)
    presence: list[str] = field(default_factory=list)  # robots whose presence may have changed
    since: float | None = None  # server time of the oldest of `frames`: the fan-out lag counts from it

    def writes(self) -> bool:
        return bool(self.frames or self.seen or self.accepted or self.rejected or self.refresh or self.release)


class IngestBuffer:
    """Every state change of the live path, bound to one event loop. The flusher and history take it out."""

    def __init__(self) -> None:
        self.latest: dict[str, Telemetry] = {}
        self.changed: set[str] = set()
        self.changed_since: float | None = None  # server time of the oldest frame among `changed`
        self.seen: dict[str, float] = {}
        # Robots this process saw reporting, with their last frame's server time (for stale transitions).
        self.reporting: dict[str, float] = {}
        self.accepted = 0
        self.rejected = 0
        self.refreshes: list[tuple[str, str]] = []
        self.releases: list[tuple[str, str]] = []
        self.presence_changed: set[str] = set()
        self.sampled_at: dict[str, float] = {}
        self.published_at: dict[str, float] = {}
        self.db = DbBatch()

    def idle(self) -> bool:
        return not (self.changed or self.seen or self.reporting or self.presence_changed or self.db) and not (
            self.accepted or self.rejected or self.refreshes or self.releases
        )

    def urgent(self) -> bool:
        """A backfill batch waits for its commit: write the history now, not on the next second."""
        return bool(self.db.waiters)

    # --- per frame ----------------------------------------------------------------------------

    def accept(
        self, robot_id: str, robot_pk: int, connection_id: str, frame: Telemetry, now: float, backfill: bool = False
    ) -> None:
        """Take one validated frame."""
        self.accepted += 1
        current = self.latest.get(robot_id)
        if current is None or frame.reported_at >= current.reported_at:
            self.latest[robot_id] = frame
            if not self.changed:
                self.changed_since = now
            self.changed.add(robot_id)
        self.seen[robot_id] = now
        last = self.reporting.get(robot_id)
        if last is None or now - last > settings.TELEMETRY_STALE_AFTER:
            self.presence_changed.add(robot_id)
        self.reporting[robot_id] = now
        self.db.seen.add(robot_id)
        # Downsample by server time: a device clock that jumps back must not stop the history.
        if backfill or now - self.sampled_at.get(robot_id, float("-inf")) >= settings.TELEMETRY_SAMPLE_INTERVAL:
            if not backfill:
                self.sampled_at[robot_id] = now
            self.db.samples.append(
                TelemetrySample(robot_id=robot_pk, reported_at=utc(frame.reported_at), seq=frame.seq, **frame.metrics)
            )
        if not backfill:
            self._publish(robot_id, connection_id, frame, now)

    def accept_batch(
        self, robot_id: str, robot_pk: int, connection_id: str, batch: Batch, now: float
    ) -> asyncio.Future | None:
        """Take a backfill batch; the returned future resolves once its samples are committed."""
        if not batch.frames:
            return None
        first = len(self.db.samples)
        for frame in batch.frames:
            self.accept(robot_id, robot_pk, connection_id, frame, now, backfill=True)
        samples = self.db.samples[first:]
        self._publish(robot_id, connection_id, max(batch.frames, key=lambda frame: frame.reported_at), now)
        waiter = asyncio.get_running_loop().create_future()
        self.db.waiters[waiter] = samples
        return waiter

    def reject(self, count: int = 1) -> None:
        self.rejected += count

    def _publish(self, robot_id: str, connection_id: str, frame: Telemetry, now: float) -> None:
        """With TELEMETRY_PUBLISH_ON_INGEST, send metrics_published through the fleet-wide gate (publishing)."""
        if not settings.TELEMETRY_PUBLISH_ON_INGEST:
            return
        interval = settings.TELEMETRY_PUBLISH_MIN_INTERVAL
        # This process's own clock first, so the gate costs Redis one call per robot per interval, not per frame.
        if interval > 0 and now - self.published_at.get(robot_id, float("-inf")) < interval:
            return
        self.published_at[robot_id] = now
        publishing.publish_on_ingest(IngestBuffer, robot_id, frame.metrics, now, connection_id)

    # --- per connection -----------------------------------------------------------------------

    def open(self, robot_id: str, robot_pk: int, connection_id: str, connected_at: float, leased: bool) -> None:
        """A socket was accepted; with a lease, the robot counts as connected."""
        self.db.open_session(connection_id, robot_pk, connected_at)
        if leased:
            self.presence_changed.add(robot_id)

    def close(self, robot_id: str, connection_id: str, fields: dict, leased: bool) -> None:
        """A socket ended: its session row, its lease, and the robot's presence (unless a newer socket has it)."""
        self.db.close_session(connection_id, fields)
        if leased:
            self.releases.append((connection_id, robot_id))
            if fields["reason"] != "replaced":
                self.presence_changed.add(robot_id)

    def refresh(self, robot_id: str, connection_id: str) -> None:
        self.refreshes.append((connection_id, robot_id))

    def announce(self, robot_ids: list[str]) -> None:
        """These robots' presence may have changed (found by the sweep, or by Redis coming back)."""
        self.presence_changed.update(robot_ids)

    def forget_stale(self, now: float) -> None:
        """Forget robots whose last frame here is older than TELEMETRY_STALE_AFTER (the sweep announces them)."""
        cutoff = now - settings.TELEMETRY_STALE_AFTER
        for robot_id in [robot_id for robot_id, at in self.reporting.items() if at <= cutoff]:
            del self.reporting[robot_id]

    # --- taken out by the flusher and the history writer -----------------------------------------

    def take(self) -> Changes:
        # A socket that closed since its refresh was queued must not get its lease back.
        released = {connection_id for connection_id, _ in self.releases}
        changes = Changes(
            frames={robot_id: self.latest[robot_id] for robot_id in sorted(self.changed)},
            seen=self.seen,
            accepted=self.accepted,
            rejected=self.rejected,
            refresh=[lease for lease in dict.fromkeys(self.refreshes) if lease[0] not in released],
            release=self.releases,
            presence=sorted(self.presence_changed),
            since=self.changed_since,
        )
        self.changed, self.changed_since, self.seen, self.accepted, self.rejected = set(), None, {}, 0, 0
        self.refreshes, self.releases, self.presence_changed = [], [], set()
        return changes

    def give_back(self, changes: Changes) -> None:
        """Redis did not take `changes`: keep them for the next flush, so nothing counted is lost."""
        self.changed.update(changes.frames)
        if changes.since is not None:  # older than any frame taken meanwhile
            self.changed_since = changes.since
        for robot_id, at in changes.seen.items():
            self.seen[robot_id] = max(at, self.seen.get(robot_id, 0.0))
        self.accepted += changes.accepted
        self.rejected += changes.rejected
        self.refreshes = list(dict.fromkeys(changes.refresh + self.refreshes))
        self.releases = changes.release + self.releases
        self.presence_changed.update(changes.presence)

    def take_db(self) -> DbBatch:
        batch, self.db = self.db, DbBatch()
        return batch
