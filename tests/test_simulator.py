"""The fleet simulator: its robots' behaviour, its missions, and whole runs against a real daphne."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from telemetry.management.commands.simulate_fleet import provision, robot_ids
from telemetry.models import Robot, RobotSession
from telemetry.robots import authenticate
from telemetry.simulator import (
    MissionPlanner,
    RobotBehaviour,
    SimulationConfig,
    Stats,
    percentile,
    simulate,
    write_missions,
)
from tests.servers import BASE_DIR, ServerProcess, child_env, free_port


def summary_table(output: str) -> dict[str, str]:
    """The command's closing table as {label: value}."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


# --- behaviour, without a server ---


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_a_robot_keeps_its_metrics_in_range_and_its_battery_drains_and_recharges():
    robot = RobotBehaviour(random.Random(3))
    samples = [robot.step(1.0) for _ in range(20_000)]
    for sample in samples:
        assert 0 <= sample["cpu_usage"] <= 100
        assert 0 <= sample["memory_usage"] <= 100
        assert 0 <= sample["battery_percentage"] <= 100
        assert sample["network_latency_ms"] >= 0
    battery = [sample["battery_percentage"] for sample in samples]
    drops = sum(1 for before, after in zip(battery, battery[1:], strict=False) if after < before)
    rises = sum(1 for before, after in zip(battery, battery[1:], strict=False) if after > before)
    assert drops > 1000 and rises > 1000
    assert min(battery) <= 16 and max(battery) >= 94
    cpu = {sample["cpu_usage"] for sample in samples}
    assert len(cpu) > 500  # it drifts, it is not a constant


def test_missions_go_from_started_through_in_progress_to_an_outcome():
    planner = MissionPlanner(random.Random(5))
    history: dict[str, list[str]] = {}
    for _ in range(2000):
        entry = planner.next_entry()
        history.setdefault(entry["mission_id"], []).append(entry["status"])
    for statuses in history.values():
        assert statuses[0] == "started"
        assert statuses[1:2] in ([], ["in_progress"])
        assert all(status in ("completed", "failed", "aborted") for status in statuses[2:3])
        assert len(statuses) <= 3
    outcomes = {statuses[2] for statuses in history.values() if len(statuses) == 3}
    assert outcomes == {"completed", "failed", "aborted"}


async def test_it_writes_exactly_rate_times_duration_mission_updates():
    written: list[dict] = []
    stats = Stats()
    await write_missions(40, written.extend, stats, asyncio.Event(), duration=0.5, rng=random.Random(1))
    assert len(written) == 20
    assert sum(stats.missions.values()) == 20
    assert all(set(entry) == {"mission_id", "status"} for entry in written)


def test_provisioning_creates_robots_and_rotates_the_tokens_of_existing_ones(db):
    first = provision(robot_ids(2, "sim"))
    second = provision(robot_ids(3, "sim"))
    assert [robot_id for robot_id, _ in second] == ["sim-0001", "sim-0002", "sim-0003"]
    assert Robot.objects.filter(robot_id__startswith="sim-").count() == 3
    assert first[0][1] != second[0][1]
    assert authenticate("sim-0001", first[0][1]) is None
    assert authenticate("sim-0001", second[0][1]).robot_id == "sim-0001"


# --- against a real daphne ---


@pytest.fixture
def daphne(transactional_db, tmp_path):
    server = ServerProcess.daphne(tmp_path)
    yield server
    server.stop()


@pytest.mark.e2e
def test_two_robots_get_every_frame_acknowledged(daphne):
    credentials = provision(robot_ids(2, "sim"))
    config = SimulationConfig(url=daphne.ws_url, rate=5, duration=2, seed=7)
    stats = asyncio.run(simulate(config, credentials))
    assert stats.totals() == {"submitted": 20, "acked": 20, "rejected": 0, "dropped": 0, "buffered": 0}
    assert (stats.connects, stats.offline_submitted, stats.handshake_rejected, stats.errors) == (2, 0, 0, {})
    assert len(stats.latencies_ms) == 20  # one live message per frame
    daphne.stop()  # closes the sessions and flushes their counts
    sessions = RobotSession.objects.filter(robot__robot_id__in=["sim-0001", "sim-0002"])
    assert sorted(sessions.values_list("robot__robot_id", "frames_accepted", "frames_rejected")) == [
        ("sim-0001", 10, 0),
        ("sim-0002", 10, 0),
    ]


@pytest.mark.e2e
def test_lossy_robots_reconnect_and_backfill_without_losing_a_frame(daphne):
    credentials = provision(robot_ids(3, "sim"))
    config = SimulationConfig(
        url=daphne.ws_url, rate=10, duration=3, lossy=True, drop_rate=1.5, offline=(0.2, 0.4), seed=11
    )
    stats = asyncio.run(simulate(config, credentials))
    assert stats.drops > 0 and stats.offline_submitted > 0
    assert stats.connects == 3 + stats.drops
    assert stats.totals() == {"submitted": 90, "acked": 90, "rejected": 0, "dropped": 0, "buffered": 0}
    assert not stats.errors


@pytest.mark.e2e
def test_the_command_streams_writes_missions_and_prints_a_summary(daphne, redis_client):
    out = StringIO()
    call_command("simulate_fleet", robots=2, rate=5, duration=2, url=daphne.ws_url, missions=10, seed=3, stdout=out)
    output = out.getvalue()
    assert output.startswith("Provisioned 2 robots (sim-0001 … sim-0002)")
    progress = r"  connected 2/2  submitted \d+  acked \d+  rejected 0  buffered \d+  dropped 0  ack p50 .*"
    assert re.search(progress + r"\(\d+ frames in the last second\)$", output, re.MULTILINE)
    table = summary_table(output)
    assert [table[f"frames {name}"] for name in ("submitted", "acked", "rejected", "still buffered")] == [
        "20",
        "20",
        "0",
        "0",
    ]
    assert table["mission updates"].startswith("20 (")
    entries = redis_client.xrange(settings.FLEET_MISSION_STREAM)
    assert len(entries) == 20
    for _, fields in entries:
        assert set(json.loads(fields[b"data"])) == {"mission_id", "status"}


@pytest.mark.e2e
def test_ctrl_c_stops_the_command_cleanly_with_a_summary(daphne):
    command = start_simulator(daphne.ws_url, "--robots", "2")
    try:
        command.send_signal(signal.SIGINT)
        output = command.communicate(timeout=20)[0]
    finally:
        command.kill()
    assert command.returncode == 0, output
    table = summary_table(output)
    assert int(table["frames submitted"]) > 0
    assert table["frames acked"] == table["frames submitted"]
    assert table["frames still buffered"] == "0"


@pytest.mark.e2e
def test_the_first_ctrl_c_waits_for_acks_and_a_second_quits_at_once(daphne):
    command = start_simulator(daphne.ws_url, "--robots", "2")
    daphne.signal(signal.SIGSTOP)  # a service that stops answering: the robots' frames stay unacked
    try:
        time.sleep(0.5)
        command.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert command.poll() is None  # still waiting for the acks
        command.send_signal(signal.SIGINT)
        started = time.monotonic()
        output = command.communicate(timeout=20)[0]
    finally:
        daphne.signal(signal.SIGCONT)
        command.kill()
    assert time.monotonic() - started < 2
    assert command.returncode == 130, output
    assert output.endswith("CommandError: Quit at once: frames not yet acknowledged were abandoned.\n")
    assert "frames submitted" not in output


@pytest.mark.e2e
def test_a_rate_above_the_server_limit_is_capped_so_no_frame_is_rate_limited(daphne):
    out, err = StringIO(), StringIO()
    call_command("simulate_fleet", robots=1, rate=50, duration=2, url=daphne.ws_url, stdout=out, stderr=err)
    assert "--rate 50 is above the server's limit of 20 frames/s per robot; using 20." in err.getvalue()
    table = summary_table(out.getvalue())
    assert (table["frames submitted"], table["frames acked"], table["frames rejected"]) == ("40", "40", "0")


# --- a simulator that cannot hurt a running fleet ---


def test_abbreviated_options_are_refused_so_robot_does_not_mean_robots(db):
    with pytest.raises(CommandError) as error:
        call_command("simulate_fleet", "--robot", "5")
    assert str(error.value) == "Error: unrecognized arguments: --robot 5"


def start_simulator(url: str, *args: str) -> subprocess.Popen:
    """simulate_fleet in a child process, returned once all its robots are connected."""
    command = subprocess.Popen(
        [sys.executable, "manage.py", "simulate_fleet", "--rate", "5", "--url", url, *args],
        cwd=BASE_DIR,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = command.stdout.readline()
        if "connected 2/2" in line or not line:
            return command
    return command


@pytest.mark.e2e
def test_a_second_simulator_on_the_same_prefix_is_refused_while_the_first_runs(daphne):
    first = start_simulator(daphne.ws_url, "--robots", "2")
    try:
        with pytest.raises(CommandError) as error:
            call_command("simulate_fleet", robots=3, duration=1, url=daphne.ws_url, stdout=StringIO())
        assert str(error.value) == (
            "2 robots of prefix 'sim' are connected right now (sim-0001 …), probably to another simulate_fleet. "
            "Starting would issue new tokens and replace them. Pick another prefix, e.g. --prefix sim2, "
            "or pass --take-over to replace them."
        )
        assert authenticate("sim-0003", "anything") is None and not Robot.objects.filter(robot_id="sim-0003").exists()

        out = StringIO()
        call_command("simulate_fleet", robots=1, duration=1, url=daphne.ws_url, prefix="sim2", stdout=out)
        assert out.getvalue().startswith("Provisioned 1 robot (sim2-0001); connecting to ")
        assert first.poll() is None  # the first run was left alone

        call_command("simulate_fleet", robots=2, duration=1, url=daphne.ws_url, take_over=True, stdout=StringIO())
        output = first.communicate(timeout=20)[0]  # both its robots were replaced, so it ends
    finally:
        first.kill()
    assert summary_table(output)["replaced (4409)"] == "2"
    assert "2 robots replaced by another connection (4409)" in output


@pytest.mark.parametrize(
    ("duration", "reason"),
    [(0, "no robot could connect within 8 s"), (3, "no robot could connect within 3 s")],
)
def test_it_exits_non_zero_naming_the_url_when_no_service_answers(db, duration, reason):
    url = f"ws://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(CommandError) as error:
        call_command("simulate_fleet", robots=2, duration=duration, url=url, stdout=StringIO())
    assert time.monotonic() - started < (10 if duration == 0 else duration + 1.5)
    message = str(error.value)
    assert message.startswith(f"{url} did not answer: {reason} (errors: ConnectionRefusedError ")
    assert message.endswith("). Is the service running (make run), and is --url right?")
