"""Alert evaluation: decide when a rule's condition has held long enough to raise, and when it clears.

Each process evaluates the robots whose latest values it just flushed (`AlertEvaluator.evaluate`);
`reporting` rules are evaluated fleet-wide, once a second, by whichever process takes a short
Redis lock (`evaluate_fleet`). The per-robot state of a rule (pending since, raised, peak) lives
in one Redis hash per rule and changes only inside one Lua script, so however many processes
evaluate the same robot, each raise and each clear is decided exactly once, and a restart
neither forgets an active alert nor raises it again. The process that decides a transition
writes its Alert row and sends the signal (telemetry.alert_records); the bridge makes it an event.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.conf import settings

from fleet.redis import get_async_client
from telemetry import presence
from telemetry.models import AlertRule

logger = logging.getLogger(__name__)

RULES_TTL = 5.0  # seconds a process keeps its copy of the enabled rules
FLEET_LOCK = "telemetry:alerts:fleet_lock"
FLEET_LOCK_MS = 800  # shorter than the once-a-second fleet-wide tick, so a dead holder delays one tick at most

# Result of a condition for one robot: past the threshold, between threshold and clear level, healthy.
HOLDS, BAND, HEALTHY = 1, 0, -1
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
# The healthy side of a clear level: `lt 20, clear 25` clears at 25 and above.
_CLEARS: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.ge,
    "le": operator.gt,
    "gt": operator.le,
    "ge": operator.lt,
}


def state_key(rule_pk: int) -> str:
    """HASH robot_id -> JSON {"s": "p" (pending) | "r" (raised), "since", "peak"} of one rule."""
    return f"telemetry:alerts:{rule_pk}"


# ARGV: now, then per rule: its key, for_seconds, direction (1: higher is worse), n, then n triples
# (robot_id, condition, value). Returns {codes, transitions}: per triple the state after it ("p",
# "r" or "-"), and per raise/clear {key, robot_id, "raise"|"clear", value, peak}. Numbers go back
# as strings: Redis would truncate a Lua number to an integer.
EVALUATE_SCRIPT = """
local now = tonumber(ARGV[1])
local codes, transitions = {}, {}
local i = 2
while i <= #ARGV do
  local key, hold, dir, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  i = i + 4
  for _ = 1, n do
    local robot, cond, value = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    i = i + 3
    local raw = redis.call('HGET', key, robot)
    local st = nil
    local dirty = false
    if raw then st = cjson.decode(raw) end
    if st == nil then
      if cond == 1 then st = {s = 'p', since = now, peak = value}; dirty = true end
    elseif st.s == 'p' then
      if cond == 1 then
        if (value - st.peak) * dir > 0 then st.peak = value; dirty = true end
      else
        st = nil; dirty = true
      end
    else
      if cond == -1 then
        table.insert(transitions, {key, robot, 'clear', tostring(value), tostring(st.peak)})
        st = nil; dirty = true
      elseif cond == 1 and (value - st.peak) * dir > 0 then
        st.peak = value; dirty = true
      end
    end
    if st ~= nil and st.s == 'p' and now - st.since >= hold then
      st.s = 'r'; dirty = true
      table.insert(transitions, {key, robot, 'raise', tostring(value), tostring(st.peak)})
    end
    if dirty then
      if st == nil then redis.call('HDEL', key, robot) else redis.call('HSET', key, robot, cjson.encode(st)) end
    end
    table.insert(codes, st == nil and '-' or st.s)
  end
end
return {codes, transitions}
"""


@dataclass(frozen=True)
class Rule:
    pk: int
    name: str
    metric: str
    op: str
    threshold: float
    for_seconds: float
    clear_threshold: float | None

    @classmethod
    def of(cls, rule: AlertRule) -> Rule:
        return cls(rule.pk, rule.name, rule.metric, rule.op, rule.threshold, rule.for_seconds, rule.clear_threshold)

    @property
    def direction(self) -> int:
        """1 when higher values are worse (gt, ge, and seconds of silence), -1 when lower ones are."""
        return -1 if self.op in ("lt", "le") else 1

    def condition(self, value: float) -> int:
        if _COMPARE[self.op](value, self.threshold):
            return HOLDS
        if self.clear_threshold is None or _CLEARS[self.op](value, self.clear_threshold):
            return HEALTHY
        return BAND


@dataclass(frozen=True)
class Transition:
    rule: Rule
    robot_id: str
    kind: str  # "raise" or "clear"
    value: float
    peak: float
    at: float

    @property
    def threshold(self) -> float:
        """The level crossed: the clear threshold on a clear, when the rule has one."""
        if self.kind == "clear" and self.rule.clear_threshold is not None:
            return self.rule.clear_threshold
        return self.rule.threshold

    def message(self) -> dict:
        """The dashboards' `{"type": "alert", ...}` message."""
        return {
            "type": "alert",
            "state": "raised" if self.kind == "raise" else "cleared",
            "rule": self.rule.name,
            "robot_id": self.robot_id,
            "metric": self.rule.metric,
            "value": self.value,
            "threshold": self.threshold,
            "timestamp": self.at,
        }


def _rules() -> list[Rule]:
    return [Rule.of(rule) for rule in AlertRule.objects.filter(enabled=True).order_by("pk")]


class AlertEvaluator:
    """One process's view of the enabled rules and of which robots have alert state in Redis."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.rules_loaded_at = float("-inf")
        # rule pk -> {robot_id: "p" | "r"}, as this process last saw it. Robots without state whose
        # condition does not hold need no round trip; refresh_state() learns of other processes' state.
        self.state: dict[int, dict[str, str]] = {}
        # rule pk -> {robot_id: a value at least as good as its peak in Redis}: a raised robot whose
        # value is no worse needs no round trip either (the common case of an alert that stays up).
        self.peaks: dict[int, dict[str, float]] = {}

    @property
    def metric_rules(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.metric != "reporting"]

    @property
    def reporting_rules(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.metric == "reporting"]

    def set_rules(self, rules: list[Rule], now: float) -> None:
        self.rules = rules
        self.rules_loaded_at = now
        self.state = {rule.pk: self.state.get(rule.pk, {}) for rule in rules}
        self.peaks = {rule.pk: self.peaks.get(rule.pk, {}) for rule in rules}

    async def load_rules(self, now: float) -> None:
        """Re-read the enabled rules when this process's copy is older than RULES_TTL."""
        if now - self.rules_loaded_at < RULES_TTL:
            return
        from channels.db import database_sync_to_async

        self.set_rules(await database_sync_to_async(_rules)(), now)

    async def refresh_state(self, client=None) -> None:
        """Learn which robots have state for each rule, whichever process wrote it."""
        if not self.rules:
            return
        client = client or get_async_client()
        pipe = client.pipeline(transaction=False)
        for rule in self.rules:
            pipe.hgetall(state_key(rule.pk))
        for rule, raw in zip(self.rules, await pipe.execute(), strict=True):
            states = {robot.decode(): json.loads(value) for robot, value in raw.items()}
            self.state[rule.pk] = {robot_id: state["s"] for robot_id, state in states.items()}
            self.peaks[rule.pk] = {robot_id: float(state["peak"]) for robot_id, state in states.items()}

    def pending_robots(self) -> set[str]:
        """Robots with a pending metric alert: re-evaluated without a new frame, so for_seconds can elapse."""
        return {robot for rule in self.metric_rules for robot, code in self.state[rule.pk].items() if code == "p"}

    async def evaluate(self, values: Mapping[str, Mapping[str, float]], now: float, client=None) -> list[Transition]:
        """Raise and clear the metric rules' alerts of these robots, given their latest metrics."""
        checks = []
        for rule in self.metric_rules:
            known = self.state[rule.pk]
            peaks = self.peaks.setdefault(rule.pk, {})
            holds, threshold, metric, direction = _COMPARE[rule.op], rule.threshold, rule.metric, rule.direction
            triples = []
            for robot_id, metrics in values.items():
                value = metrics[metric]
                if holds(value, threshold):
                    # Raised and no worse than its known peak: Redis would change nothing.
                    peak = peaks.get(robot_id)
                    if peak is not None and known.get(robot_id) == "r" and (value - peak) * direction <= 0:
                        continue
                    triples.append((robot_id, HOLDS, value))
                elif robot_id in known:
                    triples.append((robot_id, rule.condition(value), value))
            if triples:
                checks.append((rule, triples))
        return await self._run(checks, now, client)

    async def evaluate_fleet(self, now: float, client=None) -> list[Transition]:
        """The `reporting` rules over every robot that ever reported, by one process per tick (a short lock)."""
        rules = self.reporting_rules
        if not rules:
            return []
        client = client or get_async_client()
        if not await client.set(FLEET_LOCK, "1", nx=True, px=FLEET_LOCK_MS):
            return []
        await self.refresh_state(client)
        cutoff = now - settings.TELEMETRY_STALE_AFTER
        silent = {
            robot.decode(): score
            for robot, score in await client.zrangebyscore(presence.REPORTING, "-inf", cutoff, withscores=True)
        }
        known = {robot for rule in rules for robot in self.state[rule.pk]} - silent.keys()
        scores = dict(zip(known, await client.zmscore(presence.REPORTING, list(known)), strict=True)) if known else {}
        checks = []
        for rule in rules:
            triples = [(robot_id, HOLDS, now - at) for robot_id, at in silent.items()]
            for robot_id in self.state[rule.pk]:
                at = scores.get(robot_id)
                if robot_id not in silent and at is not None:
                    triples.append((robot_id, HEALTHY, max(now - at, 0.0)))
            if triples:
                checks.append((rule, triples))
        return await self._run(checks, now, client)

    async def _run(
        self, checks: list[tuple[Rule, list[tuple[str, int, float]]]], now: float, client
    ) -> list[Transition]:
        if not checks:
            return []
        args: list = [now]
        for rule, triples in checks:
            args += [state_key(rule.pk), rule.for_seconds, rule.direction, len(triples)]
            for triple in triples:
                args += triple
        codes, raw = await (client or get_async_client()).eval(EVALUATE_SCRIPT, 0, *args)
        codes = iter(codes)
        for rule, triples in checks:
            known, peaks = self.state[rule.pk], self.peaks.setdefault(rule.pk, {})
            for robot_id, condition, value in triples:
                code = next(codes).decode()
                if code == "-":
                    known.pop(robot_id, None)
                    peaks.pop(robot_id, None)
                    continue
                known[robot_id] = code
                if condition == HOLDS:
                    # At least this bad: the script keeps the worst of it and what it had.
                    peak = peaks.get(robot_id)
                    peaks[robot_id] = value if peak is None or (value - peak) * rule.direction > 0 else peak
        by_key = {state_key(rule.pk): rule for rule, _ in checks}
        return [
            Transition(by_key[key.decode()], robot.decode(), kind.decode(), float(value), float(peak), now)
            for key, robot, kind, value, peak in raw
        ]
