"""One simulated robot on a real WebSocket: connects, streams on a schedule, reconnects, backfills.

This is the part a robot client library would provide; the rest of the package only needs
SimulatedRobot(...).run() and the Stats it updates.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from telemetry.simulator.behaviour import RobotBehaviour
from telemetry.simulator.stats import Stats
from telemetry.simulator.timing import wait

MAX_BATCH = 100
# Frames a robot keeps while offline, for backfill; older ones are dropped (and counted).
MAX_BACKLOG = 1000
REPLACED = 4409
REVOKED = 4403
TOO_FAST = 4429


@dataclass
class SimulationConfig:
    url: str = "ws://127.0.0.1:8000"
    rate: float = 1.0  # frames per second per robot
    duration: float = 0.0  # seconds; 0 runs until stopped
    lossy: bool = False
    drop_rate: float = 1 / 30  # --lossy: chance per robot per second of losing its connection
    offline: tuple[float, float] = (1.0, 5.0)  # --lossy: seconds offline before reconnecting
    # The server counts messages (a batch is one) per fixed 1 s window; see SimulatedRobot._pace.
    max_messages_per_second: int = 20
    connect_concurrency: int = 50  # handshakes in flight at once
    drain_timeout: float = 5.0  # seconds to wait for outstanding acks before closing
    open_timeout: float = 10.0
    # A run ends early, as failed, when no robot connected by min(duration, this) or no frame was acked by
    # this; 8 s leaves simulate_fleet time to provision and report, so it exits within 10 s.
    give_up_after: float = 8.0
    seed: int | None = None


class SimulatedRobot:
    """One robot: connects, streams frames on a fixed schedule, reconnects, backfills what it missed."""

    def __init__(
        self,
        robot_id: str,
        token: str,
        config: SimulationConfig,
        stats: Stats,
        stop: asyncio.Event,
        rng: random.Random,
        handshakes: asyncio.Semaphore,
    ) -> None:
        self.robot_id = robot_id
        self.token = token
        self.config = config
        self.stats = stats
        self.stop = stop
        self.rng = rng
        self.handshakes = handshakes
        self.behaviour = RobotBehaviour(rng)
        self.interval = 1.0 / config.rate
        # With a duration, each robot sends exactly rate × duration frames, so runs can be checked exactly.
        self.total = round(config.rate * config.duration) if config.duration > 0 else None
        self.produced = 0
        self.seq = 0
        self.origin: float | None = None  # the schedule starts at the first successful connect
        self.last_step = time.time()
        self.backlog: collections.deque[dict] = collections.deque()
        self.pending: dict[int, float] = {}  # seq -> monotonic send time
        self.pending_batches: dict[int, tuple[float, int]] = {}  # last seq -> (send time, frames)
        self.retry_after: float | None = None
        self.done = False
        self.recent_sends: collections.deque[float] = collections.deque(maxlen=config.max_messages_per_second)

    @property
    def url(self) -> str:
        return f"{self.config.url.rstrip('/')}/api/telemetry/ws/{self.robot_id}"

    def next_frame(self) -> dict:
        now = time.time()
        metrics = self.behaviour.step(now - self.last_step)
        self.last_step = now
        self.seq += 1
        self.produced += 1
        return {"type": "telemetry", "seq": self.seq, "ts": round(now, 3), **metrics}

    def next_due(self) -> float | None:
        """Monotonic time of the next frame, or None when the robot has sent all it should."""
        if self.total is not None and self.produced >= self.total:
            return None
        return self.origin + self.produced * self.interval

    async def run(self) -> None:
        failures = 0
        while not self.done and not self.stop.is_set():
            code = None
            try:
                async with self.handshakes:
                    ws = await connect(
                        self.url,
                        additional_headers={"Authorization": f"Bearer {self.token}"},
                        open_timeout=self.config.open_timeout,
                        compression=None,
                        user_agent_header="fleet-simulator",
                    )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403, 404):
                    self.stats.handshake_rejected += 1
                    self.stats.errors[f"handshake {status}"] += 1
                    return
                self.stats.errors[f"handshake {status}"] += 1
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.stats.errors[type(exc).__name__] += 1
            else:
                failures = 0
                code = await self._session(ws)
                if code in (REPLACED, REVOKED):
                    self.stats.replaced += code == REPLACED
                    return
            if self.done or self.stop.is_set():
                return
            if code == TOO_FAST:
                self.stats.throttled += 1
                delay = (self.retry_after or 5.0) + self.rng.uniform(0, 1)
                self.retry_after = None
            elif code == "dropped":
                delay = self.rng.uniform(*self.config.offline)
            else:
                failures += 1
                delay = min(10.0, 0.5 * 2 ** (failures - 1)) * self.rng.uniform(0.5, 1.0)
            await self._offline(delay)

    async def _offline(self, seconds: float) -> None:
        """Keep producing frames into the backlog while disconnected (they are backfilled later)."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            due = self.next_due() if self.origin is not None else None
            wake = min(deadline, due) if due is not None else deadline
            if await wait(self.stop, wake - time.monotonic()):
                return
            if due is not None and due <= time.monotonic():
                self.backlog.append(self.next_frame())
                if len(self.backlog) > MAX_BACKLOG:
                    self.backlog.popleft()
                    self.stats.backlog_dropped += 1
            if time.monotonic() >= deadline:
                return

    async def _session(self, ws: ClientConnection) -> int | str | None:
        """Stream until done, stopped, dropped (--lossy) or closed. Returns the close code or "dropped"."""
        stats = self.stats
        stats.connects += 1
        stats.connected += 1
        if self.origin is None:
            self.origin = time.monotonic() + self.rng.uniform(0, self.interval)
        receiver = asyncio.create_task(self._receive(ws))
        stopping = asyncio.create_task(self.stop.wait())
        outcome: int | str | None = None
        try:
            await self._backfill(ws)
            while True:
                due = self.next_due()
                if due is None:
                    self.done = True
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    finished, _ = await asyncio.wait({receiver, stopping}, timeout=delay)
                    if finished:
                        break
                if self.config.lossy and self.rng.random() < self.config.drop_rate * self.interval:
                    outcome = "dropped"
                    break
                frame = self.next_frame()
                await self._pace()
                self.pending[frame["seq"]] = time.monotonic()
                stats.sent += 1
                await ws.send(json.dumps(frame))
            if not receiver.done():
                await self._drain(receiver)
            if outcome == "dropped":
                # Like a robot driving out of Wi-Fi range: no close handshake.
                stats.drops += 1
                ws.transport.abort()
            else:
                await ws.close()
        except ConnectionClosed:
            pass
        finally:
            stopping.cancel()
            if not receiver.done():
                try:
                    await asyncio.wait_for(receiver, 1.0)
                except (TimeoutError, asyncio.CancelledError):
                    receiver.cancel()
            stats.connected -= 1
            self._forget_pending()
        if outcome is None and not self.done and not self.stop.is_set():
            stats.disconnects += 1
            outcome = ws.close_code
        return outcome

    async def _backfill(self, ws: ClientConnection) -> None:
        while self.backlog:
            frames = [self.backlog.popleft() for _ in range(min(MAX_BATCH, len(self.backlog)))]
            last = frames[-1]["seq"]
            self.pending_batches[last] = (time.monotonic(), len(frames))
            self.stats.sent += len(frames)
            self.stats.batches += 1
            self.stats.backfilled += len(frames)
            await self._pace()
            await ws.send(json.dumps({"type": "telemetry_batch", "frames": frames}))

    async def _pace(self) -> None:
        """Never send more than the server's limit in any 1.05 s: its fixed windows start at arbitrary
        frames, and a late frame followed by an on-time one would otherwise land 21 in one window."""
        recent = self.recent_sends
        if recent.maxlen and len(recent) == recent.maxlen:
            wait = recent[0] + 1.05 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        recent.append(time.monotonic())

    async def _drain(self, receiver: asyncio.Task) -> None:
        deadline = time.monotonic() + self.config.drain_timeout
        while (self.pending or self.pending_batches) and not receiver.done() and time.monotonic() < deadline:
            await asyncio.wait({receiver}, timeout=0.01)

    async def _receive(self, ws: ClientConnection) -> None:
        stats = self.stats
        try:
            async for message in ws:
                try:
                    reply = json.loads(message)
                except ValueError:
                    stats.errors["bad reply"] += 1
                    continue
                kind = reply.get("type")
                seq = reply.get("seq")
                if kind == "ack":
                    if "accepted" in reply and seq in self.pending_batches:
                        _, count = self.pending_batches.pop(seq)
                        accepted = int(reply["accepted"])
                        stats.acked += accepted
                        stats.rejected += count - accepted
                    elif seq in self.pending:
                        stats.record_ack(self.pending.pop(seq))
                elif kind == "error":
                    code = reply.get("code", "error")
                    stats.errors[code] += 1
                    if code == "reconnecting_too_fast":
                        self.retry_after = float(reply.get("retry_after") or 5.0)
                    elif seq in self.pending:
                        del self.pending[seq]
                        stats.rejected += 1
        except ConnectionClosed:
            pass

    def _forget_pending(self) -> None:
        self.stats.unacked += len(self.pending) + sum(count for _, count in self.pending_batches.values())
        self.pending.clear()
        self.pending_batches.clear()
