"""`manage.py create_robot`: provisioning from the command line, the token on the last line."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from telemetry.models import Robot
from telemetry.robots import authenticate
from telemetry.tokens import hash_token
from tests.servers import BASE_DIR, child_env

pytestmark = pytest.mark.django_db


def create_robot(*args: str) -> list[str]:
    out = StringIO()
    call_command("create_robot", *args, stdout=out)
    return out.getvalue().splitlines()


def test_it_creates_a_robot_and_prints_its_token_on_the_last_line():
    lines = create_robot("r2d2", "--name", "Astromech")

    token = lines[-1]
    robot = Robot.objects.get(robot_id="r2d2")
    assert lines == [
        "Created robot r2d2 (Astromech).",
        "Store this token now: it is shown only once and only its hash is kept.",
        token,
    ]
    assert robot.name == "Astromech"
    assert robot.is_active is True
    assert robot.token_hash == hash_token(token)
    assert token not in robot.token_hash
    assert authenticate("r2d2", token) == robot


def test_its_tokens_carry_at_least_32_random_bytes():
    first, second = create_robot("r2d2")[-1], create_robot("bb8")[-1]

    assert len(first) >= 43  # 32 bytes in URL-safe base64
    assert first != second


def test_it_refuses_an_existing_robot_without_rotate_and_changes_nothing(r2d2):
    with pytest.raises(CommandError) as error:
        create_robot("r2d2", "--name", "Impostor")

    assert str(error.value) == (
        "Robot 'r2d2' already exists. Use --rotate to issue it a new token (the old one stops working)."
    )
    robot = Robot.objects.get(robot_id="r2d2")
    assert robot.name == "Astromech"
    assert authenticate("r2d2", r2d2.token) == robot


def test_rotate_issues_a_new_token_and_the_old_one_stops_working(r2d2):
    lines = create_robot("r2d2", "--rotate")

    token = lines[-1]
    assert lines == [
        "Rotated the token of robot r2d2; the old token no longer connects.",
        "Store this token now: it is shown only once and only its hash is kept.",
        token,
    ]
    assert authenticate("r2d2", r2d2.token) is None
    assert authenticate("r2d2", token) == Robot.objects.get(robot_id="r2d2")
    assert Robot.objects.get(robot_id="r2d2").name == "Astromech"


def test_rotate_with_a_name_renames_the_robot(r2d2):
    create_robot("r2d2", "--rotate", "--name", "Blue")

    assert Robot.objects.get(robot_id="r2d2").name == "Blue"


def test_rotate_of_a_revoked_robot_says_it_stays_revoked(r2d2):
    Robot.objects.filter(robot_id="r2d2").update(is_active=False)

    lines = create_robot("r2d2", "--rotate")

    assert lines[1] == "Robot r2d2 is revoked: the token connects once it is reactivated in admin."
    assert authenticate("r2d2", lines[-1]) is None


@pytest.mark.parametrize("robot_id", ["", "has space", "a/b", "x" * 65, "r2d2\n", "émile"])
def test_it_refuses_a_malformed_robot_id_and_stores_nothing(robot_id):
    with pytest.raises(CommandError) as error:
        create_robot(robot_id)

    assert str(error.value) == f"Invalid robot_id {robot_id!r}: use 1-64 letters, digits, '_', '.' or '-'."
    assert Robot.objects.count() == 0


def test_it_runs_as_a_real_command_whose_last_line_is_the_token(transactional_db, tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "create_robot", "c3po", "--name", "Protocol droid"],
        cwd=BASE_DIR,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    token = result.stdout.splitlines()[-1]
    assert authenticate("c3po", token) == Robot.objects.get(robot_id="c3po")

    again = subprocess.run(
        [sys.executable, "manage.py", "create_robot", "c3po"],
        cwd=BASE_DIR,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1
    assert "CommandError: Robot 'c3po' already exists." in again.stderr
    assert again.stdout == ""


def run_command(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "create_robot", *args],
        cwd=BASE_DIR,
        env=child_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_several_ids_print_csv_with_a_header_and_nothing_else():
    out = StringIO()
    call_command("create_robot", "r2d2", "bb8", stdout=out, stderr=StringIO())

    lines = out.getvalue().splitlines()
    assert lines[0] == "robot_id,token"
    rows = dict(line.split(",") for line in lines[1:])
    assert list(rows) == ["r2d2", "bb8"]
    for robot_id, token in rows.items():
        assert authenticate(robot_id, token) == Robot.objects.get(robot_id=robot_id)


def test_it_refuses_existing_robots_in_bulk_without_rotate_and_creates_none(r2d2):
    with pytest.raises(CommandError) as error:
        call_command("create_robot", "bb8", "r2d2", stdout=StringIO(), stderr=StringIO())

    assert str(error.value) == ("Robot(s) already exist: r2d2. Nothing was created; use --rotate to issue new tokens.")
    assert list(Robot.objects.values_list("robot_id", flat=True)) == ["r2d2"]


def test_bulk_rotate_issues_new_tokens_to_existing_robots_and_creates_the_others(r2d2):
    out = StringIO()
    call_command("create_robot", "r2d2", "bb8", "--rotate", stdout=out, stderr=StringIO())

    rows = dict(line.split(",") for line in out.getvalue().splitlines()[1:])
    assert authenticate("r2d2", r2d2.token) is None
    assert authenticate("r2d2", rows["r2d2"]).name == "Astromech"
    assert authenticate("bb8", rows["bb8"]) is not None


def test_it_names_the_malformed_ids_of_a_bulk_request_and_stores_nothing():
    with pytest.raises(CommandError) as error:
        call_command("create_robot", "r2d2", "a/b", "c d", stdout=StringIO())

    assert str(error.value) == "Invalid robot_id 'a/b', 'c d': use 1-64 letters, digits, '_', '.' or '-'."
    assert Robot.objects.count() == 0


def test_it_provisions_10000_robots_from_a_file_as_csv(transactional_db, tmp_path):
    ids = [f"unit-{n:05d}" for n in range(10_000)]
    path = tmp_path / "fleet.txt"
    path.write_text("# the north warehouse\n" + "\n".join(ids) + "\n\n")

    result = run_command("--from-file", str(path))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "robot_id,token"
    assert [line.split(",")[0] for line in lines[1:]] == ids
    assert result.stderr.strip().startswith("Created 10000 robot(s), rotated 0.")
    assert Robot.objects.count() == 10_000
    robot_id, token = lines[-1].split(",")
    assert authenticate(robot_id, token) == Robot.objects.get(robot_id=robot_id)


def test_csv_forces_the_table_for_one_robot_read_from_stdin(transactional_db):
    result = run_command("--from-file", "-", "--csv", stdin="c3po\n")

    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header == "robot_id,token"
    assert row.startswith("c3po,")
