"""What a simulated fleet did: connections, frames, acks and their latencies, errors."""

from __future__ import annotations

import collections
import math
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleet_client import RobotClient

FRAME_COUNTS = ("submitted", "acked", "rejected", "dropped", "buffered")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1), or None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Stats:
    """What the fleet did, shared by all robots of a run (one event loop, so no locks).

    Frame counts come from the robots' clients (`totals()`); connections and latencies from their events.
    """

    robots: int = 0
    connected: int = 0
    connects: int = 0
    drops: int = 0  # deliberate drops (--lossy)
    disconnects: int = 0  # connections that ended otherwise, before the robot was done
    handshake_rejected: int = 0
    replaced: int = 0
    throttled: int = 0  # closed 4429
    offline_submitted: int = 0  # frames submitted while their robot was offline: buffered, then backfilled
    missions: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    latencies_ms: array = field(default_factory=lambda: array("d"))  # per acked message, live or batch
    clients: list[RobotClient] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    gave_up: str | None = None  # why the run ended early: the service never answered
    ended: float | None = None
    _window_from: int = 0
    _window_submitted: int = 0

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def totals(self) -> dict[str, int]:
        """Frames submitted, acked, rejected, dropped (a full buffer) and still buffered, over all robots."""
        totals = dict.fromkeys(FRAME_COUNTS, 0)
        for client in self.clients:
            stats = client.stats
            for name in FRAME_COUNTS:
                totals[name] += int(stats[name] or 0)
        return totals

    def window(self) -> dict:
        """The totals, with frames submitted and ack latency p50/p99 since the previous call (for a progress line)."""
        totals = self.totals()
        recent = self.latencies_ms[self._window_from :]
        submitted = totals["submitted"] - self._window_submitted
        self._window_from, self._window_submitted = len(self.latencies_ms), totals["submitted"]
        return {**totals, "recent": submitted, "p50": percentile(recent, 0.5), "p99": percentile(recent, 0.99)}

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
            **self.totals(),
            "offline_submitted": self.offline_submitted,
            "ack_p50_ms": percentile(lat, 0.5),
            "ack_p99_ms": percentile(lat, 0.99),
            "ack_max_ms": max(lat) if lat else None,
            "seconds": round(self.elapsed, 2),
            "missions": dict(self.missions),
            "errors": dict(self.errors),
        }
