"""`manage.py create_robot ROBOT_ID... [--from-file PATH] [--name NAME] [--rotate] [--csv]`: provision robots.

One robot: a few lines for a person, the token alone on the last line. More than one (or --csv): CSV on
stdout, `robot_id,token` then one row per robot and nothing else, so a fleet's tokens go straight into
its provisioning system; the summary goes to stderr.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from telemetry.models import ROBOT_ID_PATTERN, Robot
from telemetry.robots import create_robot, create_robots, is_valid_robot_id


def read_ids(path: str) -> list[str]:
    """One robot id a line; blank lines and lines starting with # are skipped. "-" reads stdin."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class Command(BaseCommand):
    help = (
        "Create robots and print their tokens (shown only once; only their hashes are stored). One robot: the "
        "token is the last line. Several (ids, --from-file, or --csv): CSV robot_id,token on stdout and nothing "
        "else. With --rotate, existing robots get new tokens and the old ones stop working."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "robot_ids", nargs="*", metavar="robot_id", help=f"1-64 of [A-Za-z0-9_.-] ({ROBOT_ID_PATTERN})"
        )
        parser.add_argument(
            "--from-file", metavar="PATH", help="Also read robot ids from PATH, one a line ('-': stdin)."
        )
        parser.add_argument("--name", default="", help="A human-readable name (one robot only).")
        parser.add_argument("--rotate", action="store_true", help="Issue new tokens to robots that exist.")
        parser.add_argument("--csv", action="store_true", help="Print CSV even for one robot.")

    def handle(self, *args, robot_ids: list[str], from_file: str | None, name: str, rotate: bool, **options):
        robot_ids = list(robot_ids) + (read_ids(from_file) if from_file else [])
        if not robot_ids:
            raise CommandError("Give at least one robot_id, or --from-file PATH.")
        invalid = [robot_id for robot_id in robot_ids if not is_valid_robot_id(robot_id)]
        if invalid:
            shown = ", ".join(map(repr, invalid[:5])) + (f" and {len(invalid) - 5} more" if len(invalid) > 5 else "")
            raise CommandError(f"Invalid robot_id {shown}: use 1-64 letters, digits, '_', '.' or '-'.")
        if len(set(robot_ids)) > 1 or options["csv"]:
            if name:
                raise CommandError("--name applies to one robot; set names in admin afterwards.")
            self._many(robot_ids, rotate)
        else:
            self._one(robot_ids[0], name, rotate)

    def _many(self, robot_ids: list[str], rotate: bool) -> None:
        try:
            issued, rotated = create_robots(robot_ids, rotate=rotate)
        except ValueError as exc:
            raise CommandError(f"{str(exc).capitalize()}. Nothing was created; use --rotate to issue new tokens.")
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow(["robot_id", "token"])
        writer.writerows(issued)
        self.stderr.write(
            f"Created {len(issued) - len(rotated)} robot(s), rotated {len(rotated)}. "
            "Store these tokens now: they are shown only once and only their hashes are kept."
        )

    def _one(self, robot_id: str, name: str, rotate: bool) -> None:
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
