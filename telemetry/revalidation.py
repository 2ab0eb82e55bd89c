"""Live robot sockets re-check their credentials, so that a revocation or a rotation cannot be lost.

Each socket remembers the hash of the token it opened with. At least every TELEMETRY_AUTH_RECHECK_INTERVAL
(and at once when an invalidation for its robot arrives, see telemetry.credentials) it is checked against
the credential cache: a robot that was revoked or deleted, or whose token was rotated, has its sockets
closed with 4403 (reason `revoked` or `token_rotated`). The robot.revoke channel-layer message stays the
fast path for revocation; this is what makes it impossible to miss, and what closes rotated tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from django.conf import settings

from fleet.loops import per_loop
from telemetry.credentials import get_cache

if TYPE_CHECKING:
    from telemetry.connections import LiveConnection as Checked

logger = logging.getLogger(__name__)

TICK = 1.0


class Revalidation:
    """This loop's re-checks. `watch(connections)` once; the loop runs while there are sockets to check."""

    def __init__(self) -> None:
        self.connections: Callable[[], Iterable[Checked]] = tuple
        self.urgent: set[str] | None = set()  # robots to check now; None: every robot
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()
        get_cache().listeners.append(self._invalidated)

    def watch(self, connections: Callable[[], Iterable[Checked]]) -> None:
        """Check the sockets that `connections()` returns, from now on."""
        self.connections = connections
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="credential-recheck")

    def _invalidated(self, robot_ids: set[str] | None) -> None:
        if robot_ids is None or self.urgent is None:
            self.urgent = None
        else:
            self.urgent |= robot_ids
        self.wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), TICK)
            except TimeoutError:
                pass
            self.wake.clear()
            connections = list(self.connections())
            if not connections:
                self.urgent = set()
                return
            urgent, self.urgent = self.urgent, set()
            due_before = loop.time() - settings.TELEMETRY_AUTH_RECHECK_INTERVAL
            due = [
                c
                for c in connections
                if urgent is None or c.robot_id in urgent or c.credentials_checked_at <= due_before
            ]
            results = await asyncio.gather(*(self._check(c, loop.time()) for c in due), return_exceptions=True)
            failed = [result for result in results if isinstance(result, Exception)]
            if failed:
                # The database is away: the sockets stay (they were valid) and are checked on the next tick.
                logger.warning("could not re-check %d robot socket(s): %s", len(failed), failed[0])

    async def _check(self, connection: Checked, now: float) -> None:
        reason = await get_cache().still_valid(connection.robot_id, connection.token_hash)
        connection.credentials_checked_at = now
        if reason is not None:
            await connection.close_with(reason)  # 4403


get_revalidation = per_loop(Revalidation)
