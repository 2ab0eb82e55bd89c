"""What the client tells an `on_event` callback: its connection's changes and the frames it settled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["connected", "connect_failed", "disconnected", "stopped", "acked", "rejected"]


@dataclass(frozen=True)
class ClientEvent:
    kind: EventKind
    # connect_failed: the handshake's HTTP status, if it got that far; disconnected: the close code,
    # None when the connection broke without one (1006).
    code: int | None = None
    # connect_failed: "HTTP 503" or the exception's name; disconnected: the close code's name
    # ("replaced", "rate_limited"…); stopped: why; rejected: the server's error code, or "too_old".
    reason: str = ""
    seqs: tuple[int, ...] = ()  # acked, rejected: the frames
    latency: float | None = None  # acked: seconds from sending the message to its ack


EventCallback = Callable[[ClientEvent], None]
