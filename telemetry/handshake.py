"""The robot route's guard: a channels middleware that admits only a robot with its own token.

Credentials come from this process's cache (telemetry.credentials): no database round trip unless the
process has not seen the robot lately. Every refusal (HTTP 403) is counted as bad_credentials.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs

from telemetry import refusals
from telemetry.credentials import get_cache
from telemetry.protocol import UnsupportedProtocol, choose_subprotocol
from telemetry.robots import is_valid_robot_id

logger = logging.getLogger(__name__)


def handshake_token(scope: dict) -> str | None:
    """The robot's token from `Authorization: Bearer`, else from `?token=`. Never log it."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return tokens[0] if tokens else None


class RobotTokenMiddleware:
    """Puts the robot and the chosen subprotocol in scope; refuses any other handshake with HTTP 403."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        started = time.perf_counter()  # telemetry_handshake_duration_seconds counts the token check too
        robot_id = scope["url_route"]["kwargs"]["robot_id"]
        robot = None
        try:
            subprotocol = choose_subprotocol(scope.get("subprotocols") or [])
        except UnsupportedProtocol as exc:
            logger.warning("robot %r refused: %s", robot_id[:64], exc)
        else:
            if is_valid_robot_id(robot_id):
                robot = await get_cache().authenticate(robot_id, handshake_token(scope))
        if robot is not None:
            scope = {**scope, "robot": robot, "robot_subprotocol": subprotocol, "handshake_started": started}
            return await self.inner(scope, receive, send)
        refusals.count(refusals.BAD_CREDENTIALS)
        message = await receive()
        if message["type"] == "websocket.connect":
            # Before accept, a close is an HTTP 403: nothing stored, no event.
            await send({"type": "websocket.close"})
