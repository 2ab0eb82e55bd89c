"""This process's live robot connections, and the one loop that flushes, writes history and sweeps for them.

The loop calls the ingest buffer, the flusher, the history writer and presence; it keeps none of their state.
After each flush it evaluates the alert rules over the robots that flush wrote, and on the slow tick
the rest of them (telemetry.alerting). In a server process the loop runs from start-up on
(`run_resident`), robots connected or not, for the fleet-wide rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import redis
from django.conf import settings

from fleet import shutdown
from fleet.loops import per_loop
from telemetry import presence
from telemetry.alerting import AlertLoop
from telemetry.flusher import Flusher
from telemetry.history import HistoryWriter
from telemetry.ingest import IngestBuffer

logger = logging.getLogger(__name__)

# How long shutdown waits for robots to answer the close handshake before flushing.
CLOSE_HANDSHAKE_WAIT = 2.0
MAX_GROUP_RENEWALS_PER_TICK = 200


class LiveConnection(Protocol):
    robot_id: str
    connection_id: str
    last_message_at: float  # loop time
    lease_refreshed_at: float  # loop time
    group_joined_at: float  # loop time
    token_hash: str  # of the token the socket opened with (telemetry.revalidation)
    credentials_checked_at: float  # loop time
    done: asyncio.Event

    async def close_with(self, reason: str) -> None: ...

    async def renew_group(self) -> None: ...


def _group_expiry() -> float:
    config = settings.CHANNEL_LAYERS.get("default", {}).get("CONFIG", {})
    return float(config.get("group_expiry", 86400))


class Registry:
    def __init__(self) -> None:
        self.connections: dict[str, LiveConnection] = {}
        self.buffer = IngestBuffer()
        self.flusher = Flusher()
        self.history = HistoryWriter()
        self.task: asyncio.Task | None = None
        # Set on shutdown: sockets that still arrive are closed with 1001 at once.
        self.closing = False
        self.background: set[asyncio.Task] = set()
        self.alerts = AlertLoop()
        # Set in a server process (fleet.serve): the loop runs even with no robot connected, so the
        # fleet-wide `reporting` rules are evaluated when every robot has gone.
        self.resident = False

    def add(self, connection: LiveConnection) -> None:
        self.connections[connection.connection_id] = connection
        self.ensure_running()

    def discard(self, connection: LiveConnection) -> None:
        self.connections.pop(connection.connection_id, None)

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="telemetry-process-loop")

    def spawn(self, coroutine) -> None:
        """Run a fire-and-forget coroutine, keeping a reference so it is not collected mid-way."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        next_slow = 0.0
        while True:
            try:
                # Ticks at a fixed rate, whatever a flush takes: a frame waits one interval at most
                # for its flush, not an interval plus the previous flush's round trips.
                interval = settings.TELEMETRY_FLUSH_INTERVAL
                next_tick = max(next_tick + interval, loop.time())
                await asyncio.sleep(next_tick - loop.time())
                now = loop.time()
                if self.buffer.urgent():
                    self._write_history(now)
                written = await self.flusher.flush(self.buffer)
                if written and self.alerts.enabled:
                    await self.alerts.after_flush({robot_id: frame.metrics for robot_id, frame in written.items()})
                if now >= next_slow:
                    # After the flush, so the sweep's round trip never delays the frames' fan-out.
                    next_slow = now + self._slow_tick()
                    self._maintain(now)
                    if self.connections or not self.buffer.idle():
                        # A resident loop with nothing of its own leaves presence alone, as before.
                        await self._sweep()
                    await self.alerts.tick(self._latest_metrics)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("telemetry process loop tick failed")
            if not self.connections and self.buffer.idle() and self.history.idle() and not self.resident:
                return

    def _write_history(self, now: float) -> None:
        if self.history.due(now, self.buffer.urgent()):
            self.history.start(self.buffer.take_db(), now)

    async def _sweep(self) -> None:
        """Take the fleet's time-driven presence changes (expired leases, stale robots) into the next fan-out."""
        try:
            self.buffer.announce(await presence.asweep())
        except (redis.RedisError, OSError):
            pass  # The flush that follows reports the outage; the next sweep catches up.

    def _latest_metrics(self, robot_id: str) -> dict[str, float] | None:
        frame = self.buffer.latest.get(robot_id)
        return None if frame is None else frame.metrics

    @staticmethod
    def _slow_tick() -> float:
        return min(1.0, settings.TELEMETRY_IDLE_TIMEOUT / 4, settings.TELEMETRY_PRESENCE_TTL / 4)

    def _maintain(self, now: float) -> None:
        idle_before = now - settings.TELEMETRY_IDLE_TIMEOUT
        lease_before = now - settings.TELEMETRY_PRESENCE_TTL / 3
        group_before = now - _group_expiry() / 2
        renewals = 0
        for connection in list(self.connections.values()):
            if connection.last_message_at <= idle_before:
                self.spawn(connection.close_with("idle_timeout"))
                continue
            if connection.lease_refreshed_at <= lease_before:
                connection.lease_refreshed_at = now
                self.buffer.refresh(connection.robot_id, connection.connection_id)
            if connection.group_joined_at <= group_before and renewals < MAX_GROUP_RENEWALS_PER_TICK:
                # Re-joining resets the membership's age, so the socket never goes deaf to
                # robot.replace / robot.revoke however long it stays open.
                renewals += 1
                connection.group_joined_at = now
                self.spawn(connection.renew_group())
        self.buffer.forget_stale(time.time())
        self._write_history(now)

    async def drain(self) -> None:
        """Flush everything now (shutdown, tests): Redis, then the database."""
        await self.flusher.flush(self.buffer)
        await self.history.wait()
        task = self.history.start(self.buffer.take_db(), asyncio.get_running_loop().time())
        if task is not None:
            await task
        await self.alerts.drain()

    async def close_all(self, reason: str = "server_shutdown") -> None:
        self.closing = True
        connections = list(self.connections.values())
        await asyncio.gather(*(connection.close_with(reason) for connection in connections))
        if connections:
            # Give robots a moment to answer the close handshake, so their sockets end cleanly.
            waits = [asyncio.ensure_future(connection.done.wait()) for connection in connections]
            _, pending = await asyncio.wait(waits, timeout=CLOSE_HANDSHAKE_WAIT)
            for waiter in pending:
                waiter.cancel()
        await self.drain()

    async def stop(self) -> None:
        """Flush and stop the loop (tests; the loop also stops by itself once idle)."""
        await self.drain()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
        for task in list(self.background):
            task.cancel()


# The registry of the running event loop.
get_registry = per_loop(Registry)


def run_resident() -> None:
    """Keep this process's loop running from now on (a server process, for the fleet-wide alert rules)."""
    registry = get_registry()
    registry.resident = True
    registry.ensure_running()


async def close_all() -> None:
    """Shutdown hook: close every local robot socket with 1001 and flush what they leave behind."""
    registry = get_registry.peek()
    if registry is not None:
        await registry.close_all()


shutdown.register(close_all)
