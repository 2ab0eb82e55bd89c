"""`manage.py runfleet` (what `make run` calls) on a fresh var/ directory and the embedded Redis."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request

import psutil
import pytest

from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.e2e


def start_runfleet(tmp_path) -> ServerProcess:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}}
    env["FLEET_VAR_DIR"] = str(tmp_path / "var")
    server = ServerProcess(
        [sys.executable, "manage.py", "runfleet", "--port", str(port)], env, tmp_path / "runfleet.log"
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

        server.signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0
        assert still_running(children) == []
        assert "Fleet Telemetry stopped." in server.output()
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
