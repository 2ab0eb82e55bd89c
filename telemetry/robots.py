"""Provisioning and authentication of robots. The one place that creates or checks tokens."""

from __future__ import annotations

import re

from django.db import transaction

from telemetry.models import ROBOT_ID_PATTERN, Robot
from telemetry.tokens import hash_token, new_token, token_matches

_ROBOT_ID = re.compile(ROBOT_ID_PATTERN)


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
