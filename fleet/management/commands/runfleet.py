"""`manage.py runfleet`: migrate, then run Redis (if embedded), daphne and qcluster, and supervise them."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from fleet import cluster
from fleet.embedded_redis import EmbeddedRedis, EmbeddedRedisError

# How long the children have to stop by themselves before they are killed. Idle, the whole stack
# stops in about 1.2 s; an aggregation run ends after its current batch (fleet.cluster), and daphne
# closes robots' sockets within its own shutdown timeout.
STOP_TIMEOUT = 8.0
# The signal each child stops cleanly on; see fleet.cluster for why qcluster's is SIGINT.
STOP_SIGNALS = {"daphne": signal.SIGTERM, "qcluster": cluster.STOP_SIGNAL}


class Command(BaseCommand):
    help = "Run the whole service: migrations, embedded Redis (when REDIS_URL is unset), daphne and qcluster."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-qcluster", action="store_true", help="Run daphne only (e.g. a second web process).")

    def handle(self, *args, host: str, port: int, no_qcluster: bool, **options):
        # Migrating also creates the scheduled jobs (metrics' post_migrate handler), idempotently.
        call_command("migrate", interactive=False, verbosity=0)
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)

        redis_server = None
        if settings.REDIS_EMBEDDED:
            try:
                redis_server = EmbeddedRedis(settings.VAR_DIR / "redis").start()
            except EmbeddedRedisError as exc:
                raise CommandError(str(exc)) from None

        env = {**os.environ, "REDIS_URL": settings.REDIS_URL, "PYTHONUNBUFFERED": "1"}
        commands = {"daphne": [sys.executable, "-m", "fleet.serve", "--bind", host, "--port", str(port)]}
        if not no_qcluster:
            commands["qcluster"] = [sys.executable, "-m", "fleet.qcluster"]
        children: dict[str, subprocess.Popen] = {}
        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            if not stopping:
                self.stdout.write("Stopping…")
                self.stdout.flush()
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        exit_code = 0
        try:
            for name, command in commands.items():
                # A session of its own, so a terminal's Ctrl-C reaches only us and we stop
                # children in order; killpg then also reaches qcluster's worker processes.
                children[name] = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, start_new_session=True)
            # Supervising allocates next to nothing; with the start-up heap frozen, the interpreter's
            # exit skips scanning it, which would add most of a second to every stop.
            gc.collect()
            gc.freeze()
            base = f"http://{host}:{port}"
            url_option = "" if (host, port) == ("127.0.0.1", 8000) else f" --url ws://{host}:{port}"
            # Other commands get debug off by default; these must use the settings this service runs with.
            python = ("DJANGO_DEBUG=1 " if settings.DEBUG else "") + ".venv/bin/python"
            self.stdout.write(
                f"Fleet Telemetry is starting on {base}\n"
                f"  health     {base}/healthz\n"
                f"  API        {base}/api/telemetry/info\n"
                f"  API docs   {base}/api/docs/\n"
                f"  admin      {base}/admin/\n"
                f"  dashboard  {base}/dashboard/\n"
                f"  metrics    {base}/metrics\n"
                f"  robots     ws://{host}:{port}/api/telemetry/ws/<robot_id>\n"
                f"  Redis      {settings.REDIS_URL}{' (embedded)' if redis_server else ''}\n"
                "Next:\n"
                f"  create a user     {python} manage.py createsuperuser\n"
                f"  simulate robots   {python} manage.py simulate_fleet --robots 20{url_option}\n"
                "Press Ctrl-C to stop."
            )
            while not stopping:
                dead = [(name, child.returncode) for name, child in children.items() if child.poll() is not None]
                if dead:
                    name, code = dead[0]
                    self.stderr.write(f"{name} exited unexpectedly with code {code}; stopping the service.")
                    exit_code = 1
                    break
                time.sleep(0.2)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            killed = _stop_all(children)
            for name in killed:
                self.stderr.write(f"{name} did not stop within {STOP_TIMEOUT:g} s and was killed (SIGKILL).")
            if redis_server is not None:
                redis_server.stop()
        if exit_code:
            sys.exit(exit_code)
        self.stdout.write("Fleet Telemetry stopped.")


def _stop_all(children: dict[str, subprocess.Popen]) -> list[str]:
    """Signal every child's process group to stop, wait, then SIGKILL what is left; the names killed."""
    running = {name: child for name, child in children.items() if child.poll() is None}
    for name, child in running.items():
        _signal_group(child, STOP_SIGNALS.get(name, signal.SIGTERM))
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in running.values():
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    killed = []
    for name, child in running.items():
        if child.poll() is None:
            killed.append(name)
        elif _group_alive(child):
            killed.append(f"{name}'s remaining processes")
        # Also reaches grandchildren (qcluster's workers) that outlived their leader.
        _signal_group(child, signal.SIGKILL)
        child.wait()
    return killed


def _group_alive(child: subprocess.Popen) -> bool:
    try:
        os.killpg(child.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass
