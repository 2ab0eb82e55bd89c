"""Alert evaluation inside a process's loop: after each flush, and on the once-a-second tick.

- `after_flush`: the robots whose latest values this flush wrote are evaluated against the metric
  rules (one Redis round trip, and only when a condition holds or a robot has alert state).
- `tick`: rules are re-read every few seconds; robots with a pending alert are evaluated again
  with their latest values, so `for_seconds` can elapse without a new frame; and `reporting`
  rules are evaluated fleet-wide by whichever process takes the tick's lock.
Each raise and clear is recorded (Alert row, signal, so the event) in a worker thread, then sent
to the dashboards as `{"type": "alert", ...}` (telemetry.alert_records.Recorder: in order, and again
on every tick while the database refuses them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from telemetry.alert_records import Recorder
from telemetry.alerts import AlertEvaluator, Transition

logger = logging.getLogger(__name__)


class AlertLoop:
    def __init__(self) -> None:
        self.evaluator = AlertEvaluator()
        self._failing = False
        self.recorder = Recorder()

    @property
    def enabled(self) -> bool:
        return bool(self.evaluator.rules)

    async def after_flush(self, values: Mapping[str, Mapping[str, float]]) -> None:
        """Evaluate the metric rules over these robots' latest metrics ({robot_id: metrics})."""
        if not values or not self.evaluator.metric_rules:
            return
        await self._guarded(self.evaluator.evaluate(values, time.time()))

    async def tick(self, latest: Callable[[str], Mapping[str, float] | None]) -> None:
        """About once a second: reload rules, re-evaluate pending robots, evaluate `reporting` fleet-wide."""
        try:
            await self.evaluator.load_rules(time.monotonic())
        except Exception as exc:
            self._warn("could not read the alert rules (%s); keeping the previous ones", exc)
        self.recorder.retry()  # what the database refused last time
        if not self.enabled:
            return
        await self._guarded(self._tick(latest))

    async def _tick(self, latest: Callable[[str], Mapping[str, float] | None]) -> list[Transition]:
        now = time.time()
        await self.evaluator.refresh_state()
        pending = {robot_id: latest(robot_id) for robot_id in self.evaluator.pending_robots()}
        transitions = await self.evaluator.evaluate({r: m for r, m in pending.items() if m is not None}, now)
        return transitions + await self.evaluator.evaluate_fleet(now)

    async def _guarded(self, evaluation) -> None:
        try:
            transitions = await evaluation
        except Exception as exc:  # Redis away: the next flush or tick tries again
            self._warn("alert evaluation failed (%s); retrying", exc)
            return
        if self._failing:
            self._failing = False
            logger.warning("alert evaluation works again")
        if transitions:
            self.recorder.add(transitions)

    async def drain(self) -> None:
        """Wait for the transitions being recorded (shutdown, tests)."""
        await self.recorder.drain()

    def _warn(self, message: str, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(message, exc)
