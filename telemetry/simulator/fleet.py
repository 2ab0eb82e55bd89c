"""A whole simulated fleet: one task per robot, the mission writer and the progress reports."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

from telemetry.simulator.missions import write_missions
from telemetry.simulator.robot import SimulatedRobot, SimulationConfig
from telemetry.simulator.stats import Stats
from telemetry.simulator.timing import wait


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
    robots = [
        SimulatedRobot(robot_id, token, config, stats, stop, random.Random(master.random()))
        for robot_id, token in credentials
    ]
    tasks = [asyncio.create_task(robot.run(), name=f"robot {robot.robot_id}") for robot in robots]
    if missions_per_second > 0 and mission_sink is not None:
        missions = write_missions(
            missions_per_second, mission_sink, stats, stop, config.duration, random.Random(master.random())
        )
        tasks.append(asyncio.create_task(missions, name="missions"))
    reporter = asyncio.create_task(_report(stats, stop, on_progress)) if on_progress else None
    watchdog = asyncio.create_task(_give_up_unanswered(stats, stop, config))
    all_done = asyncio.ensure_future(asyncio.wait(tasks))
    stopped = asyncio.create_task(stop.wait())
    # Robots that keep failing to connect must not hold the run past its duration for long.
    deadline = config.duration + config.flush_timeout + 10.0 if config.duration > 0 else None
    try:
        await asyncio.wait({all_done, stopped}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        if not all_done.done() and not stats.gave_up:
            # Stopped (Ctrl-C) or late: robots wait for the acks of what they submitted, briefly.
            stop.set()
            await asyncio.wait(tasks, timeout=config.flush_timeout + 2.0)
    finally:
        stop.set()
        helpers = [task for task in (reporter, watchdog, all_done, stopped) if task is not None]
        for task in tasks + helpers:
            task.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
        stats.ended = time.monotonic()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
    return stats


async def _report(stats: Stats, stop: asyncio.Event, on_progress: Callable[[Stats], None]) -> None:
    while not await wait(stop, 1.0):
        on_progress(stats)


async def _give_up_unanswered(stats: Stats, stop: asyncio.Event, config: SimulationConfig) -> None:
    """Stop the run when the service never answers, so a wrong URL or a stopped service fails fast."""
    first = min(config.duration, config.give_up_after) if config.duration > 0 else config.give_up_after
    if await wait(stop, first):
        return
    if stats.connects == 0:
        stats.gave_up = f"no robot could connect within {first:g} s"
        stop.set()
        return
    if await wait(stop, config.give_up_after - first) or stats.totals()["acked"]:
        return
    stats.gave_up = f"no frame was acknowledged within {config.give_up_after:g} s"
    stop.set()
