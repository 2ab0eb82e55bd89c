"""Where the benchmark runs: its own Redis and database, robots with tokens, servers and load generators on cores.

Set up before Django is: the settings read REDIS_URL and DATABASE_URL at import time.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# The project's server with everything on, but with the per-robot frame limit out of the way so a
# handful of robots can offer maximum load (the real limit is 20 frames/s per connection).
FLEET_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "bench-only-not-a-secret-bench-only-not-a-secret-0123456789",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "DJANGO_SECURE_SSL_REDIRECT": "0",
    # Plain ws:// on loopback, without a proxy in front: the TLS requirement is out of scope here.
    "ROBOTS_REQUIRE_TLS": "0",
    "DJANGO_LOG_LEVEL": "WARNING",
    "TELEMETRY_MAX_FRAMES_PER_SECOND": "1000000",
    "TELEMETRY_IDLE_TIMEOUT": "3600",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _preexec(cpu: int | None):
    def setup() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 sockets need more than 1,024
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup


@dataclass
class Process:
    """A server child in its own session, output kept in a log file."""

    name: str
    popen: subprocess.Popen
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.pid).memory_info().rss

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class CpuMeter:
    """A process's CPU time sampled every 50 ms, to tell what it used between two wall-clock instants
    (a load generator's measurement window, without the connections and warm-up before it)."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.time(), self.process.cpu_seconds()))
            except Exception:  # the process is gone
                return
            if self._stop.wait(0.05):
                return

    def between(self, begin: float, end: float) -> float | None:
        self._stop.set()
        self._thread.join()
        return _at(self.samples, end) - _at(self.samples, begin) if len(self.samples) > 1 else None


def _at(samples: list[tuple[float, float]], moment: float) -> float:
    """CPU seconds at `moment`, interpolated between the two samples around it."""
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if t0 <= moment <= t1:
            return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c0
    return samples[0][1] if moment < samples[0][0] else samples[-1][1]


@dataclass
class Bench:
    quick: bool
    directory: Path
    redis_url: str
    database_url: str
    cpus: list[int] = field(default_factory=usable_cpus)
    credentials: list[tuple[str, str]] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    owns_redis: bool = True  # False when REDIS_URL was given: then never flush it
    floor: float | None = None  # the Channels echo's frames/s in this run, for ratios
    _redis: object = None

    # Server on the first core, load generators on the second, when there are two.
    @property
    def server_cpu(self) -> int | None:
        return self.cpus[0] if len(self.cpus) >= 2 else None

    @property
    def client_cpu(self) -> int | None:
        return self.cpus[1] if len(self.cpus) >= 2 else None

    @property
    def pinned(self) -> bool:
        return len(self.cpus) >= 2

    def seconds(self, full: float) -> float:
        return 3.0 if self.quick else full

    def child_env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "REDIS_URL": self.redis_url, "DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        env.update(extra)
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str], port: int, cpu: int | None) -> Process:
        log = self.directory / f"{name}-{port}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                args, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_preexec(cpu)
            )
        process = Process(name, popen, port, log)
        self.processes.append(process)
        return process

    def wait_listening(self, process: Process, timeout: float = 60.0, http_path: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.output()}")
            try:
                if http_path:
                    with urllib.request.urlopen(f"http://127.0.0.1:{process.port}{http_path}", timeout=2):
                        return
                else:
                    with socket.create_connection(("127.0.0.1", process.port), timeout=1):
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{process.name} did not start within {timeout} s:\n{process.output()}")

    # --- servers ---

    def bare_echo(self, cpu: int | None = None) -> Process:
        port = free_port()
        args = [sys.executable, "-m", "bench.echo_servers", "--port", str(port)]
        process = self.spawn("websockets-echo", args, self.child_env(), port, cpu)
        self.wait_listening(process)
        return process

    def channels_echo(self, cpu: int | None = None) -> Process:
        port = free_port()
        env = self.child_env()
        env.pop("DJANGO_SETTINGS_MODULE", None)  # the echo app configures its own minimal settings
        args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.echo_asgi:application"]
        process = self.spawn("channels-echo", args, env, port, cpu)
        self.wait_listening(process)
        return process

    def daphne_echo(self, cpu: int | None = None) -> Process:
        """bench.bare_echo on stock daphne: daphne's own defaults, none of fleet.serve's tuning."""
        port = free_port()
        env = self.child_env()
        env.pop("DJANGO_SETTINGS_MODULE", None)
        args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.bare_echo:application"]
        process = self.spawn("daphne-bare-echo", args, env, port, cpu)
        self.wait_listening(process)
        return process

    def fleet(self, cpu: int | None = None, **extra: str) -> Process:
        port = free_port()
        # The load generator's dashboard sends this Origin; with debug off only exact origins pass.
        env = self.child_env(**{**FLEET_ENV, "DASHBOARD_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}", **extra})
        args = [sys.executable, "-m", "fleet.serve", "--bind", "127.0.0.1", "--port", str(port)]
        process = self.spawn("fleet-daphne", args, env, port, cpu)
        self.wait_listening(process, http_path="/healthz")
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)

    # --- load generators ---

    def _spec_file(self, spec: dict) -> Path:
        path = self.directory / f"spec-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec))
        return path

    def loadgen(self, spec: dict, cpu: int | None = None, timeout: float = 600, module: str = "bench.loadgen") -> dict:
        """Run one load generator (a `python -m` module) to completion and return its result."""
        path = self._spec_file({**spec, "cpu": cpu})
        done = subprocess.run(
            [sys.executable, "-m", module, str(path)],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_preexec(None),
        )
        if done.returncode != 0:
            raise RuntimeError(f"{module} failed:\n{done.stderr[-3000:]}")
        return _result(path)

    def held(self, spec: dict, cpu: int | None = None, timeout: float = 300) -> HeldLoad:
        """Start a load generator that holds (idle connections, a dashboard) until released."""
        path = self._spec_file({**spec, "cpu": cpu})
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", str(path)],
            cwd=BASE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_preexec(None),
        )
        return HeldLoad(popen, timeout, path)

    # --- data ---

    def robots(self, count: int) -> list[tuple[str, str]]:
        """The first `count` bench robots with their tokens, created in bulk the first time they are asked for."""
        if len(self.credentials) < count:
            from telemetry.models import Robot
            from telemetry.robots import assign_new_token

            start = len(self.credentials)
            new = []
            for n in range(start + 1, count + 1):
                robot = Robot(robot_id=f"bench-{n:05d}", name=f"Bench robot {n}")
                new.append((robot, assign_new_token(robot)))
            Robot.objects.bulk_create([robot for robot, _ in new], batch_size=1000)
            self.credentials += [(robot.robot_id, token) for robot, token in new]
        return self.credentials[:count]

    def fresh_robot(self, name: str) -> tuple[str, str]:
        from telemetry.robots import create_robot

        _, token = create_robot(name, rotate=True)
        return name, token

    def dashboard_token(self) -> str:
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        user, _ = get_user_model().objects.get_or_create(username="bench-operator", defaults={"is_staff": True})
        token, _ = Token.objects.get_or_create(user=user)
        return token.key

    def reset_redis(self) -> None:
        """Forget telemetry state between runs (presence, latest values, connect-rate counters)."""
        from fleet.redis import get_client

        if self.owns_redis:
            get_client().flushdb()


class HeldLoad:
    def __init__(self, popen: subprocess.Popen, timeout: float, path: Path) -> None:
        self.popen = popen
        self.path = path
        self.timeout = timeout

    def ready(self) -> dict:
        """Wait for the READY line; its JSON."""
        line = self.popen.stdout.readline()
        if not line.startswith("READY "):
            self.popen.kill()
            raise RuntimeError(f"load generator did not get ready: {line}{self.popen.stderr.read()[-3000:]}")
        return json.loads(line[6:])

    def release(self) -> dict:
        out, err = self.popen.communicate("", timeout=self.timeout)
        if self.popen.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{err[-3000:]}")
        return _result(self.path)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.communicate()


def _result(spec_path: Path) -> dict:
    from bench.loadgen import result_path

    return json.loads(Path(result_path(spec_path)).read_text())


def prepare(quick: bool) -> tuple[Bench, list]:
    """Start Redis, create and migrate the database, set up Django. Returns the bench and things to clean up."""
    directory = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    cleanups: list = [lambda: shutil.rmtree(directory, ignore_errors=True)]
    redis_url = os.environ.get("REDIS_URL")
    owns_redis = not redis_url
    if owns_redis:
        from fleet.embedded_redis import EmbeddedRedis

        server = EmbeddedRedis(directory / "redis", persist=False).start()
        cleanups.insert(0, server.stop)
        redis_url = server.url
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{directory / 'bench.sqlite3'}"
    os.environ.update(REDIS_URL=redis_url, DATABASE_URL=database_url, FLEET_VAR_DIR=str(directory / "var"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    bench = Bench(
        quick=quick, directory=directory, redis_url=redis_url, database_url=database_url, owns_redis=owns_redis
    )
    return bench, cleanups
