"""A simulated fleet: robots that stream realistic telemetry over real WebSockets.

Plain asyncio, no Django: `simulate(config, credentials)` drives the robots and returns Stats, so the
`simulate_fleet` command, the tests and the benchmarks all call the same code. Provisioning robots and
writing missions to Redis live with the caller (see telemetry/management/commands/simulate_fleet.py).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import secrets
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

MAX_BATCH = 100
# Frames a robot keeps while offline, for backfill; older ones are dropped (and counted).
MAX_BACKLOG = 1000
REPLACED = 4409
REVOKED = 4403
TOO_FAST = 4429


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1), or None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- Behaviour ---------------------------------------------------------------------------------


class RobotBehaviour:
    """One robot's health over time. `step(dt)` advances it by dt seconds and returns the four metrics.

    The battery drains with load and recharges on a dock once low; CPU wanders around a per-robot
    baseline with occasional bursts of work; memory creeps up and drops when a process restarts;
    latency jitters around a base with rare spikes. Advancing by dt keeps it independent of the rate.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.battery = rng.uniform(40.0, 100.0)
        self.charging = False
        self.drain = rng.uniform(0.05, 0.2)  # % per second at idle
        self.charge_rate = rng.uniform(0.8, 1.5)  # % per second on the dock
        self.cpu_base = rng.uniform(15.0, 55.0)
        self.cpu = self.cpu_base
        self.burst = 0.0  # seconds of extra work left
        self.memory = rng.uniform(30.0, 60.0)
        self.latency_base = rng.uniform(4.0, 30.0)

    def step(self, dt: float) -> dict[str, float]:
        rng = self.rng
        dt = max(0.0, min(dt, 60.0))
        # CPU: mean-reverting noise, plus a burst of work now and then.
        if self.burst <= 0 and rng.random() < 0.02 * dt:
            self.burst = rng.uniform(3.0, 15.0)
        self.burst = max(0.0, self.burst - dt)
        target = min(95.0, self.cpu_base + (35.0 if self.burst > 0 else 0.0))
        pull = 1 - math.exp(-0.5 * dt)
        self.cpu += (target - self.cpu) * pull + rng.gauss(0, 3.0) * math.sqrt(max(dt, 0.01))
        self.cpu = _clamp(self.cpu, 0.0, 100.0)
        # Memory: slow creep, sometimes freed by a restart.
        self.memory += rng.uniform(0.0, 0.05) * dt
        if self.memory > 85.0 or rng.random() < 0.002 * dt:
            self.memory -= rng.uniform(15.0, 30.0)
        self.memory = _clamp(self.memory + rng.gauss(0, 0.2), 5.0, 100.0)
        # Battery: drains faster under load, docks below 15%, undocks when nearly full.
        if self.charging:
            self.battery += self.charge_rate * dt
            if self.battery >= rng.uniform(95.0, 100.0):
                self.charging = False
        else:
            self.battery -= self.drain * (1 + self.cpu / 100.0) * dt
            if self.battery <= 15.0:
                self.charging = True
        self.battery = _clamp(self.battery, 0.0, 100.0)
        # Latency: jitter around a base, a rare spike (a Wi-Fi handover).
        latency = self.latency_base * rng.lognormvariate(0, 0.25)
        if rng.random() < 0.01:
            latency += rng.uniform(100.0, 400.0)
        return {
            "cpu_usage": round(self.cpu, 1),
            "memory_usage": round(self.memory, 1),
            "network_latency_ms": round(latency, 1),
            "battery_percentage": round(self.battery, 1),
        }


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


# --- Statistics --------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the fleet did, shared by all robots of a run (one event loop, so no locks)."""

    robots: int = 0
    connected: int = 0
    connects: int = 0
    drops: int = 0  # deliberate drops (--lossy)
    disconnects: int = 0  # connections that ended otherwise before the robot was done
    handshake_rejected: int = 0
    replaced: int = 0
    throttled: int = 0  # closed 4429
    sent: int = 0  # frames, live and backfilled
    acked: int = 0
    rejected: int = 0
    unacked: int = 0  # sent, but the connection ended before an answer came
    backlog_dropped: int = 0
    batches: int = 0
    backfilled: int = 0
    missions: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    latencies_ms: array = field(default_factory=lambda: array("d"))
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    _window_from: int = 0
    _window_sent: int = 0

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def record_ack(self, sent_at: float) -> None:
        self.acked += 1
        self.latencies_ms.append((time.monotonic() - sent_at) * 1000)

    def window(self) -> dict:
        """Latency p50/p99 and frames sent since the previous call (for a once-a-second progress line)."""
        recent = self.latencies_ms[self._window_from :]
        sent = self.sent - self._window_sent
        self._window_from, self._window_sent = len(self.latencies_ms), self.sent
        return {"sent": sent, "p50": percentile(recent, 0.5), "p99": percentile(recent, 0.99)}

    def summary(self) -> dict:
        lat = self.latencies_ms
        return {
            "robots": self.robots,
            "connects": self.connects,
            "drops": self.drops,
            "disconnects": self.disconnects,
            "handshake_rejected": self.handshake_rejected,
            "replaced": self.replaced,
            "throttled": self.throttled,
            "sent": self.sent,
            "acked": self.acked,
            "rejected": self.rejected,
            "unacked": self.unacked,
            "backlog_dropped": self.backlog_dropped,
            "batches": self.batches,
            "backfilled": self.backfilled,
            "ack_p50_ms": percentile(lat, 0.5),
            "ack_p99_ms": percentile(lat, 0.99),
            "ack_max_ms": max(lat) if lat else None,
            "seconds": round(self.elapsed, 2),
            "missions": dict(self.missions),
            "errors": dict(self.errors),
        }


# --- Robots ------------------------------------------------------------------------------------


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
            if await _wait(self.stop, wake - time.monotonic()):
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


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; True when it is set."""
    if event.is_set():
        return True
    if seconds <= 0:
        return False
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except TimeoutError:
        return False


# --- Missions ----------------------------------------------------------------------------------

MISSION_OUTCOMES = (("completed", 0.85), ("failed", 0.10), ("aborted", 0.05))


class MissionPlanner:
    """Mission status updates as another system would write them: started, in_progress, then an outcome."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.run = secrets.token_hex(3)
        self.count = 0
        self.active: dict[str, str] = {}

    def next_entry(self) -> dict[str, str]:
        rng = self.rng
        if not self.active or (len(self.active) < 50 and rng.random() < 0.4):
            self.count += 1
            mission_id = f"sim-{self.run}-{self.count}"
            status = "started"
        else:
            mission_id = rng.choice(list(self.active))
            if self.active[mission_id] == "started":
                status = "in_progress"
            else:
                outcomes, weights = zip(*MISSION_OUTCOMES, strict=True)
                status = rng.choices(outcomes, weights)[0]
        if status in ("started", "in_progress"):
            self.active[mission_id] = status
        else:
            del self.active[mission_id]
        return {"mission_id": mission_id, "status": status}


async def write_missions(
    per_second: float,
    sink: Callable[[list[dict[str, str]]], None],
    stats: Stats,
    stop: asyncio.Event,
    duration: float = 0.0,
    rng: random.Random | None = None,
) -> None:
    """Hand `sink` about `per_second` mission updates a second (exactly per_second × duration with a duration).

    `sink` is blocking (a Redis pipeline) and runs in a thread so robots never wait for it.
    """
    planner = MissionPlanner(rng or random.Random())
    total = round(per_second * duration) if duration > 0 else None
    started = time.monotonic()
    written = 0
    while True:
        stopped = await _wait(stop, 0.2)
        target = math.floor(per_second * (time.monotonic() - started))
        if total is not None:
            target = min(total, target)
        entries = [planner.next_entry() for _ in range(max(0, target - written))]
        if entries:
            await asyncio.to_thread(sink, entries)
            written += len(entries)
            stats.missions.update(entry["status"] for entry in entries)
        if stopped or (total is not None and written >= total):
            return


# --- The fleet ---------------------------------------------------------------------------------


async def simulate(
    config: SimulationConfig,
    credentials: Sequence[tuple[str, str]],
    stop: asyncio.Event | None = None,
    on_progress: Callable[[Stats], None] | None = None,
    missions_per_second: float = 0.0,
    mission_sink: Callable[[list[dict[str, str]]], None] | None = None,
) -> Stats:
    """Run one simulated robot per (robot_id, token) until the duration is over or `stop` is set."""
    if config.rate <= 0:
        raise ValueError("rate must be positive")
    stop = stop or asyncio.Event()
    stats = Stats(robots=len(credentials))
    master = random.Random(config.seed)
    handshakes = asyncio.Semaphore(config.connect_concurrency)
    robots = [
        SimulatedRobot(robot_id, token, config, stats, stop, random.Random(master.random()), handshakes)
        for robot_id, token in credentials
    ]
    tasks = [asyncio.create_task(robot.run(), name=f"robot {robot.robot_id}") for robot in robots]
    if missions_per_second > 0 and mission_sink is not None:
        missions = write_missions(
            missions_per_second, mission_sink, stats, stop, config.duration, random.Random(master.random())
        )
        tasks.append(asyncio.create_task(missions, name="missions"))
    reporter = asyncio.create_task(_report(stats, stop, on_progress)) if on_progress else None
    # Robots that keep failing to connect must not hold the run past its duration for long.
    deadline = config.duration + config.drain_timeout + 10.0 if config.duration > 0 else None
    try:
        done, _ = await asyncio.wait(tasks, timeout=deadline)
        if len(done) < len(tasks):
            stop.set()
            await asyncio.wait(tasks, timeout=config.drain_timeout + 2.0)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if reporter:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        stats.ended = time.monotonic()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
    return stats


async def _report(stats: Stats, stop: asyncio.Event, on_progress: Callable[[Stats], None]) -> None:
    while not await _wait(stop, 1.0):
        on_progress(stats)
