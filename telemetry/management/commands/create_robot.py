"""`manage.py create_robot <robot_id> [--name NAME] [--rotate]`: provision a robot; the token is the last line."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from telemetry.models import ROBOT_ID_PATTERN, Robot
from telemetry.robots import create_robot, is_valid_robot_id


class Command(BaseCommand):
    help = (
        "Create a robot and print its token as the last line of output (shown only once; only its hash is stored). "
        "With --rotate, an existing robot gets a new token and the old one stops working for new connections."
    )

    def add_arguments(self, parser):
        parser.add_argument("robot_id", help=f"1-64 letters, digits, '_', '.' or '-' ({ROBOT_ID_PATTERN})")
        parser.add_argument("--name", default="", help="A human-readable name.")
        parser.add_argument("--rotate", action="store_true", help="Issue a new token to an existing robot.")

    def handle(self, *args, robot_id: str, name: str, rotate: bool, **options):
        # Checked here too, for messages that say what to do; create_robot re-checks under a row lock.
        if not is_valid_robot_id(robot_id):
            raise CommandError(f"Invalid robot_id {robot_id!r}: use 1-64 letters, digits, '_', '.' or '-'.")
        existed = Robot.objects.filter(robot_id=robot_id).exists()
        if existed and not rotate:
            raise CommandError(
                f"Robot {robot_id!r} already exists. Use --rotate to issue it a new token (the old one stops working)."
            )
        try:
            robot, token = create_robot(robot_id, name=name, rotate=rotate)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if existed:
            self.stdout.write(f"Rotated the token of robot {robot.robot_id}; the old token no longer connects.")
        else:
            label = f" ({robot.name})" if robot.name else ""
            self.stdout.write(f"Created robot {robot.robot_id}{label}.")
        if not robot.is_active:
            self.stdout.write(f"Robot {robot.robot_id} is revoked: the token connects once it is reactivated in admin.")
        self.stdout.write("Store this token now: it is shown only once and only its hash is kept.")
        # The token alone on the last line, so scripts can take it with `| tail -n 1`.
        self.stdout.write(token)
