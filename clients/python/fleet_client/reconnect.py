"""When to reconnect: what each close code asks of a robot, and exponential backoff with full jitter."""

from __future__ import annotations

import random
from enum import Enum

SUBPROTOCOL = "fleet-telemetry.v1"


class Next(Enum):
    AT_ONCE = "reconnect at once"
    BACK_OFF = "back off"
    RETRY_AFTER = "back off honouring retry_after"
    STOP = "never reconnect"


# The server's close codes (docs/websocket.md). Anything else, or no close frame at all (1006), backs off.
CLOSE_CODES: dict[int, tuple[Next, str]] = {
    1001: (Next.AT_ONCE, "server_shutdown"),
    4000: (Next.AT_ONCE, "idle_timeout"),
    1008: (Next.BACK_OFF, "protocol_error"),
    1009: (Next.BACK_OFF, "too_large"),
    1011: (Next.BACK_OFF, "internal_error"),
    1013: (Next.BACK_OFF, "try_again_later"),
    4429: (Next.RETRY_AFTER, "rate_limited"),
    4403: (Next.STOP, "revoked"),
    # Another connection of this robot took over: reconnecting would only close that one in turn.
    4409: (Next.STOP, "replaced"),
}


def after_close(code: int | None) -> tuple[Next, str]:
    return CLOSE_CODES.get(code or 1006, (Next.BACK_OFF, f"closed_{code or 1006}"))


class Backoff:
    """Full jitter: the n-th wait in a row is uniform in [0, min(cap, base * 2**n)]."""

    def __init__(self, base: float = 0.5, cap: float = 60.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self, cap: float | None = None) -> float:
        """The next wait; `cap` lowers the ceiling for this one (the count of failures still grows)."""
        ceiling = min(self.cap if cap is None else min(cap, self.cap), self.base * 2**self.failures)
        delay = random.uniform(0.0, ceiling)
        self.failures = min(self.failures + 1, 32)
        return delay

    def reset(self) -> None:
        self.failures = 0
