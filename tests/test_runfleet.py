"""`manage.py runfleet` (what `make run` calls) on a fresh var/ directory and the embedded Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
import redis
from django.conf import settings

from tests.servers import BASE_DIR, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.e2e


def runfleet_env(tmp_path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}}
    return {**env, "FLEET_VAR_DIR": str(tmp_path / "var"), **overrides}


def start_runfleet(tmp_path, **env: str) -> ServerProcess:
    port = free_port()
    server = ServerProcess(
        [sys.executable, "manage.py", "runfleet", "--port", str(port)],
        runfleet_env(tmp_path, **env),
        tmp_path / "runfleet.log",
    )
    server.port = port
    server.wait_http("/healthz", timeout=120)
    return server


def descendants(server: ServerProcess) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Processes that are alive (a zombie is dead, just not yet reaped by a container's init)."""
    _, alive = psutil.wait_procs(processes, timeout=1)
    running = []
    for process in alive:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def test_it_serves_health_and_leaves_nothing_behind_on_ctrl_c(tmp_path):
    server = start_runfleet(tmp_path)
    try:
        with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=5) as response:
            assert json.load(response) == {"status": "ok", "database": "ok", "redis": "ok"}
        children = descendants(server)
        commands = " ".join(" ".join(child.cmdline()) for child in children)
        assert "redis-server" in commands
        assert "fleet.serve" in commands
        assert "qcluster" in commands
        assert (tmp_path / "var" / "fleet.sqlite3").exists()

        assert "create a user     DJANGO_DEBUG=1 .venv/bin/python manage.py createsuperuser" in server.output()
        simulate = (
            "simulate robots   DJANGO_DEBUG=1 .venv/bin/python manage.py simulate_fleet --robots 20"
            f" --url {server.ws_url}\n"
        )
        assert simulate in server.output()

        stopped_in = ctrl_c(server)
        output = server.output()
        assert stopped_in < 3.0, output
        assert server.process.returncode == 0
        assert still_running(children) == []
        assert "Stopping…" in output
        assert re.search(r"Q Cluster [\w-]+ has stopped\.", output), output
        assert "SIGKILL" not in output
        assert output.rstrip().endswith("Fleet Telemetry stopped.")
    finally:
        server.stop()


def ctrl_c(server: ServerProcess) -> float:
    """Send SIGINT as a terminal's Ctrl-C would; the seconds until runfleet exited."""
    started = time.monotonic()
    server.signal(signal.SIGINT)
    server.wait(timeout=15)
    return time.monotonic() - started


def test_it_stops_within_8_s_during_an_aggregation_run_which_ends_after_its_batch(tmp_path):
    # Batches of 20 make a run of 100,000 entries last far longer than a stop may take.
    server = start_runfleet(tmp_path, METRICS_AGGREGATION_BATCH="20")
    try:
        socket = tmp_path / "var" / "redis" / "redis.sock"
        client = redis.Redis(unix_socket_path=str(socket))
        with client.pipeline(transaction=False) as pipe:
            for n in range(100_000):
                pipe.xadd(
                    settings.FLEET_MISSION_STREAM, {"data": json.dumps({"mission_id": f"m{n}", "status": "started"})}
                )
            pipe.execute()
        enqueue = "from django_q.tasks import async_task; async_task('metrics.aggregation.aggregate_mission_metrics')"
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", enqueue],
            cwd=BASE_DIR,
            env=runfleet_env(tmp_path, REDIS_URL=f"unix://{socket}"),
            check=True,
            timeout=60,
        )
        assert wait_for(lambda: "processing" in server.output() and "aggregate_mission_metrics" in server.output(), 30)
        time.sleep(1.0)  # well into the run

        stopped_in = ctrl_c(server)
        output = server.output()
        assert stopped_in < 8.0, output
        assert "stopped early, the service is stopping" in output
        assert "SIGKILL" not in output
        assert output.rstrip().endswith("Fleet Telemetry stopped.")
    finally:
        server.stop()


def test_it_exits_non_zero_and_names_the_child_that_died(tmp_path):
    server = start_runfleet(tmp_path)
    try:
        children = descendants(server)
        daphne = next(child for child in children if "fleet.serve" in " ".join(child.cmdline()))
        daphne.kill()
        assert server.wait(timeout=15) == 1
        assert "daphne exited unexpectedly" in server.output()
        assert still_running(children) == []
    finally:
        server.stop()


# A child that ignores the stop signals; with LEAVE_ONE, one that exits but leaves such a process in its group.
STUBBORN = """
import os, signal, sys, time
def ignore():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[1] == "leave_one":
    if os.fork() == 0:
        ignore()
        time.sleep(60)
        os._exit(0)
else:
    ignore()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("mode", "named"), [("ignore", "stubborn"), ("leave_one", "stubborn's remaining processes")])
def test_a_child_that_outlives_the_stop_timeout_is_killed_and_named(monkeypatch, mode, named):
    from fleet.management.commands import runfleet

    monkeypatch.setattr(runfleet, "STOP_TIMEOUT", 0.5)
    child = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, mode], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert child.stdout.readline() == "ready\n"
    assert runfleet._stop_all({"stubborn": child}) == [named]
    assert wait_for(lambda: not runfleet._group_alive(child), within=5)  # nothing of it left, once init reaps
