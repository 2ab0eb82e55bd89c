"""One simulated robot: its health on a schedule, submitted to a `fleet_client.RobotClient` as a real robot's is.

The client connects, buffers while offline, backfills and reconnects; this module only decides what
to submit and when, drops the connection on purpose (--lossy), and counts what the client reports.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from fleet_client import ClientEvent, RobotClient
from telemetry.simulator.behaviour import RobotBehaviour
from telemetry.simulator.stats import Stats
from telemetry.simulator.timing import wait

REPLACED = 4409
TOO_FAST = 4429


@dataclass
class SimulationConfig:
    url: str = "ws://127.0.0.1:8000"
    rate: float = 1.0  # frames per second per robot
    duration: float = 0.0  # seconds; 0 runs until stopped
    lossy: bool = False
    drop_rate: float = 1 / 30  # --lossy: chance per robot per second of losing its connection
    offline: tuple[float, float] = (1.0, 5.0)  # --lossy: seconds offline before reconnecting
    drain_timeout: float = 5.0  # seconds for the last frames' acks (after the duration, or after Ctrl-C)
    # A run ends early, as failed, when no robot connected by min(duration, this) or no frame was acked by
    # this; 8 s leaves simulate_fleet time to provision and report, so it exits within 10 s.
    give_up_after: float = 8.0
    seed: int | None = None

    @property
    def flush_timeout(self) -> float:
        # A lossy robot may be offline when its last frame is submitted: its backfill waits for the reconnect.
        return self.drain_timeout + (self.offline[1] if self.lossy else 0.0)


class SimulatedRobot:
    """One robot: submits a frame every 1/rate s, and with a duration exactly rate × duration of them."""

    def __init__(
        self,
        robot_id: str,
        token: str,
        config: SimulationConfig,
        stats: Stats,
        stop: asyncio.Event,
        rng: random.Random,
    ) -> None:
        self.robot_id = robot_id
        self.config = config
        self.stats = stats
        self.stop = stop
        self.rng = rng
        self.behaviour = RobotBehaviour(rng)
        self.interval = 1.0 / config.rate
        self.total = round(config.rate * config.duration) if config.duration > 0 else None
        self.connected = False
        self.first_connect = asyncio.Event()
        self.dropping = False  # the next disconnect is our own (--lossy)
        self.client = RobotClient(url=config.url, robot_id=robot_id, token=token, on_event=self._on_event)
        stats.clients.append(self.client)

    async def run(self) -> None:
        await self.client.start()
        try:
            await self._stream()
            await self.client.flush(timeout=self.config.flush_timeout)
        except asyncio.CancelledError:
            # Cut off (a second Ctrl-C, or past the run's deadline): no closing handshake to wait for.
            self.client.interrupt()
            raise
        finally:
            await self.client.close()
            if self.connected:  # close() ends the connection without an event
                self.connected = False
                self.stats.connected -= 1

    def _halted(self) -> bool:
        """Stopped by the fleet (Ctrl-C), or for good by the server (replaced, or refused with 403)."""
        return self.stop.is_set() or self.client.stats["stopped"] is not None

    async def _stream(self) -> None:
        # The schedule starts at the first connect, so a run's frames are streamed, not a startup backlog.
        while not await wait(self.first_connect, 0.2):
            if self._halted():
                return
        # Robots start at random points of their first interval, so the fleet's frames are spread over it.
        origin = time.monotonic() + self.rng.uniform(0, self.interval)
        last_step = time.time()
        submitted = 0
        while self.total is None or submitted < self.total:
            due = origin + submitted * self.interval
            # Wake at least once a second: a robot replaced (4409) or refused (403) stops submitting.
            while (left := due - time.monotonic()) > 0:
                if await wait(self.stop, min(left, 1.0)) or self._halted():
                    return
            if self._halted():
                return
            now = time.time()
            self.client.submit(self.behaviour.step(now - last_step))
            last_step = now
            submitted += 1
            if not self.connected:
                self.stats.offline_submitted += 1
            elif self.config.lossy and self.rng.random() < self.config.drop_rate * self.interval:
                # Like a robot driving out of Wi-Fi range: no close handshake, then offline for a while.
                self.dropping = True
                self.stats.drops += 1
                self.client.interrupt(offline=self.rng.uniform(*self.config.offline))

    def _on_event(self, event: ClientEvent) -> None:
        stats = self.stats
        if event.kind == "connected":
            self.connected = True
            self.first_connect.set()
            stats.connected += 1
            stats.connects += 1
        elif event.kind == "disconnected":
            self.connected = False
            stats.connected -= 1
            if self.dropping:
                self.dropping = False
            elif event.code == REPLACED:
                stats.replaced += 1
            elif event.code == TOO_FAST:
                stats.throttled += 1
            else:
                stats.disconnects += 1
        elif event.kind == "connect_failed":
            stats.errors[event.reason] += 1
            if event.code == 403:  # the client stops: the robot is unknown, inactive, or its token is wrong
                stats.handshake_rejected += 1
        elif event.kind == "acked" and event.latency is not None:
            stats.latencies_ms.append(event.latency * 1000)
        elif event.kind == "rejected":
            stats.errors[event.reason] += len(event.seqs)
