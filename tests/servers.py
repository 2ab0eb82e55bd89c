"""Run the service's real processes (daphne, qcluster, runfleet) from tests, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)


def wait_for(predicate: Callable[[], object], within: float, step: float = 0.1) -> object:
    """Poll `predicate` until it returns something truthy or `within` seconds pass; its last value."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """A DATABASE_URL for the test database that pytest-django created, for child processes."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def child_env(**overrides: str) -> dict[str, str]:
    # The client library from the checkout, as pytest's own `pythonpath` has it (simulate_fleet imports it).
    path = os.pathsep.join(filter(None, [str(BASE_DIR / "clients" / "python"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "DATABASE_URL": test_database_url(), "REDIS_URL": settings.REDIS_URL, "PYTHONPATH": path}
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return {key: value for key, value in env.items() if value is not None}


class ServerProcess:
    """A child process in its own session, with its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            args, cwd=BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @classmethod
    def daphne(cls, tmp_path: Path, port: int | None = None, **env: str) -> ServerProcess:
        port = port or free_port()
        server = cls(
            [sys.executable, "-m", "fleet.serve", "--bind", "127.0.0.1", "--port", str(port)],
            child_env(**env),
            tmp_path / f"daphne-{port}.log",
        )
        server.port = port
        server.wait_http("/healthz")
        return server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_http(self, path: str, timeout: float = 30.0, status: int = 200) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}{path}", timeout=2) as response:
                    if response.status == status:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} did not answer {status} within {timeout} s:\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self._log.close()
        return self.process.returncode
