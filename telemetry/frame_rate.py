"""A robot socket's frame budget, checked before a message is even decoded.

Per one-second window a socket may send TELEMETRY_MAX_FRAMES_PER_SECOND messages. Beyond that a
message is dropped undecoded; the first one dropped in a window gets the one `rate_limited` error of
that window, the rest get nothing, so a flood cannot make the server write more than one reply a
second. A socket over TELEMETRY_FLOOD_FACTOR times the budget in TELEMETRY_FLOOD_SECONDS windows
in a row is closed with 1008: no well-behaved robot does that, and its reads alone cost CPU.
"""

from __future__ import annotations

from django.conf import settings

ADMIT = 0
DROP = 1  # over the budget; this window's error was already sent
RATE_LIMITED = 2  # over the budget: reply with this window's one rate_limited error
FLOOD = 3  # sustained flood: close with 1008


class FrameRate:
    __slots__ = ("limit", "flood_above", "flood_seconds", "window_start", "count", "warned", "flooded_windows")

    def __init__(self, now: float) -> None:
        self.limit = settings.TELEMETRY_MAX_FRAMES_PER_SECOND
        self.flood_above = self.limit * settings.TELEMETRY_FLOOD_FACTOR
        self.flood_seconds = settings.TELEMETRY_FLOOD_SECONDS
        self.window_start = now
        self.count = 0
        self.warned = False
        self.flooded_windows = 0

    def check(self, now: float) -> int:
        """ADMIT, DROP, RATE_LIMITED or FLOOD for a message that arrives at `now` (loop time)."""
        elapsed = now - self.window_start
        if elapsed >= 1.0:
            # A window in a row only if this one follows the last at once; a pause ends the streak.
            flooded = self.count > self.flood_above and elapsed < 2.0
            self.flooded_windows = self.flooded_windows + 1 if flooded else 0
            if self.flooded_windows >= self.flood_seconds:
                return FLOOD
            self.window_start = now
            self.count = 0
            self.warned = False
        self.count += 1
        if self.count <= self.limit:
            return ADMIT
        if self.warned:
            return DROP
        self.warned = True
        return RATE_LIMITED
