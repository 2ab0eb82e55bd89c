"""Why a robot socket closed: the one list of close reasons, each with the code the server sends."""

from __future__ import annotations

# reason -> WebSocket close code (None: the client closed, with its own code).
CLOSE_CODES: dict[str, int | None] = {
    "client_disconnect": None,
    "idle_timeout": 4000,
    "protocol_error": 1008,
    "too_large": 1009,
    "rate_limited": 4429,
    "replaced": 4409,
    "revoked": 4403,
    "server_shutdown": 1001,
}
CLOSE_REASONS = frozenset(CLOSE_CODES)
