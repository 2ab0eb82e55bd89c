"""One live socket per robot, across processes: each socket joins its robot's group on the default layer.

A newer socket announces itself (robot.replace) and the older one closes with 4409; a revocation
(robot.revoke) closes it with 4403. The consumer mixes this in.
"""

from __future__ import annotations

import asyncio
import logging
import time

logger = logging.getLogger(__name__)
_warned_at = float("-inf")


def warn_sometimes(message: str, *args) -> None:
    """Log a process-wide problem at most once a minute, not once per socket."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= 60:
        _warned_at = now
        logger.warning(message, *args)


def robot_group(robot_id: str) -> str:
    """The channel-layer group that a robot's live connection joins (in any daphne process)."""
    return f"robot.{robot_id}"


class RobotGroupMember:
    """Needs robot_id, connection_id, connected_at, channel_layer, channel_name, finished and close_with."""

    async def _join_group(self) -> None:
        """Join the robot's group and tell older sockets of this robot, in any process, to close (4409)."""
        try:
            await self.channel_layer.group_add(robot_group(self.robot_id), self.channel_name)
            await self._announce()
        except Exception as exc:
            warn_sometimes("channel layer unavailable (%s); robots are not replaced across processes", exc)
            self.group_joined_at = float("-inf")  # the process loop retries the membership

    async def _announce(self) -> None:
        await self.channel_layer.group_send(
            robot_group(self.robot_id),
            {"type": "robot.replace", "connection_id": self.connection_id, "connected_at": self.connected_at},
        )

    async def renew_group(self) -> None:
        try:
            await self.channel_layer.group_add(robot_group(self.robot_id), self.channel_name)
        except Exception as exc:
            warn_sometimes("group renewal failed (%s); retrying", exc)
            self.group_joined_at = float("-inf")

    async def _leave_group(self) -> None:
        try:
            await self.channel_layer.group_discard(robot_group(self.robot_id), self.channel_name)
        except Exception:
            pass  # The membership expires by itself (group_expiry).

    async def _listen(self) -> None:
        # Off the handshake path: a slow or hung channel layer must not delay the first acks.
        await self._join_group()
        handlers = {"robot.replace": self.robot_replace, "robot.revoke": self.robot_revoke}
        while True:
            try:
                message = await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                warn_sometimes("channel layer receive failed (%s); retrying every second", exc)
                await asyncio.sleep(1.0)
                continue
            handler = handlers.get(message.get("type"))
            if handler is not None:
                await handler(message)
            if self.finished:
                return

    # --- channel-layer handlers -------------------------------------------------------------------

    async def robot_replace(self, event: dict) -> None:
        """A newer authenticated socket of this robot exists (here or in another process)."""
        if event["connection_id"] == self.connection_id:
            return
        if (event["connected_at"], event["connection_id"]) > (self.connected_at, self.connection_id):
            await self.close_with("replaced")
            return
        # An older socket joined the group after our announcement missed it: announce again.
        try:
            await self._announce()
        except Exception as exc:
            warn_sometimes("channel layer unavailable (%s); robots are not replaced across processes", exc)

    async def robot_revoke(self, event: dict) -> None:
        """The robot was revoked (admin/API): close with 4403."""
        await self.close_with("revoked")
