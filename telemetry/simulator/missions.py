"""Mission status updates as another system would write them to the mission stream."""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections.abc import Callable

from telemetry.simulator.stats import Stats
from telemetry.simulator.timing import wait

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
        stopped = await wait(stop, 0.2)
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
