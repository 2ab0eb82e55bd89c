"""Provisioning and authentication of robots. The one place that creates or checks tokens."""

from __future__ import annotations

import asyncio
import logging
import re

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from telemetry.models import ROBOT_ID_PATTERN, Robot
from telemetry.robot_group import robot_group
from telemetry.tokens import hash_token, new_token, token_matches

_ROBOT_ID = re.compile(ROBOT_ID_PATTERN)
# Seconds that a revocation may spend telling live sessions to close.
REVOKE_SEND_TIMEOUT = 2.0

logger = logging.getLogger(__name__)


def is_valid_robot_id(robot_id: str) -> bool:
    # fullmatch: `$` alone would also accept a trailing newline.
    return bool(_ROBOT_ID.fullmatch(robot_id))


@transaction.atomic
def create_robot(robot_id: str, name: str = "", rotate: bool = False) -> tuple[Robot, str]:
    """Create a robot (or, with rotate=True, give an existing one a new token). Returns the new token."""
    if not is_valid_robot_id(robot_id):
        raise ValueError(f"robot_id must match {ROBOT_ID_PATTERN}")
    token = new_token()
    robot = Robot.objects.select_for_update().filter(robot_id=robot_id).first()
    if robot is None:
        robot = Robot.objects.create(robot_id=robot_id, name=name, token_hash=hash_token(token))
        return robot, token
    if not rotate:
        raise ValueError(f"robot {robot_id} already exists; use rotate to issue a new token")
    robot.token_hash = hash_token(token)
    if name:
        robot.name = name
    robot.save(update_fields=["token_hash", "name"])
    return robot, token


def authenticate(robot_id: str, token: str | None) -> Robot | None:
    """The active robot that `token` belongs to, or None (unknown, inactive, or wrong token)."""
    if not token or not is_valid_robot_id(robot_id):
        return None
    robot = Robot.objects.filter(robot_id=robot_id, is_active=True).first()
    if robot is None or not token_matches(token, robot.token_hash):
        return None
    return robot


def assign_new_token(robot: Robot) -> str:
    """Give an unsaved or existing robot a new token hash (the caller saves). Returns the token."""
    token = new_token()
    robot.token_hash = hash_token(token)
    return token


def rotate_token(robot: Robot) -> str:
    """Issue `robot` a new token; the old one stops working for new handshakes. Returns the new token."""
    _, token = create_robot(robot.robot_id, rotate=True)
    return token


def revoke_robots(robot_ids: list[str]) -> int:
    """Deactivate robots and, once that has committed, close their live sessions (4403). Returns how many changed."""
    with transaction.atomic():
        changed = Robot.objects.filter(robot_id__in=robot_ids, is_active=True).update(is_active=False)
        # After commit: a consumer that checks the database on the message must see is_active=False.
        transaction.on_commit(lambda: close_live_sessions(robot_ids))
    return changed


def close_live_sessions(robot_ids: list[str]) -> None:
    """Tell the live connection of each robot, wherever it runs, to close with 4403 (revoked).

    Errors are logged, never raised: the revocation itself has committed, and authenticate() already
    refuses the robot's next handshake.
    """
    if not robot_ids:
        return
    try:
        async_to_sync(_send_revoke)(list(robot_ids))
    except Exception:
        logger.exception("could not notify the live sessions of revoked robots %s", ", ".join(robot_ids))


async def _send_revoke(robot_ids: list[str]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    # The layer has no socket timeout (see settings.CHANNEL_LAYERS): an admin request must not wait on a hung Redis.
    async with asyncio.timeout(REVOKE_SEND_TIMEOUT):
        for robot_id in robot_ids:
            await layer.group_send(robot_group(robot_id), {"type": "robot.revoke"})
