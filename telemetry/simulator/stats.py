"""What a simulated fleet did: connections, frames, acks and their latencies, errors."""

from __future__ import annotations

import collections
import math
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1), or None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


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
    gave_up: str | None = None  # why the run ended early: the service never answered
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
