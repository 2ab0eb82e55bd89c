"""`python manage.py simulate_fleet --robots 20`: a fleet of simulated robots against a running service."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from telemetry.simulator import SimulationConfig, Stats, simulate


def robot_ids(count: int, prefix: str) -> list[str]:
    return [f"{prefix}-{n:04d}" for n in range(1, count + 1)]


def connected_now(ids: list[str]) -> list[str]:
    """Those of `ids` connected to the service right now; none when its Redis is down (so is the service)."""
    from telemetry.presence import robot_states

    try:
        states = robot_states(ids)
    except redis.ConnectionError:
        return []
    return [robot_id for robot_id in ids if states[robot_id]["connected"]]


def free_prefix(prefix: str, count: int) -> str:
    """A prefix like `sim2` whose robots are not connected, to suggest instead of a busy one."""
    for n in range(2, 100):
        candidate = f"{prefix}{n}"
        if not connected_now(robot_ids(count, candidate)):
            return candidate
    return f"{prefix}-b"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def provision(ids: list[str]) -> list[tuple[str, str]]:
    """Create the robots, or issue existing ones a new token (only hashes are stored, so old tokens are lost)."""
    from telemetry.robots import create_robot

    credentials = []
    for robot_id in ids:
        _, token = create_robot(robot_id, name=f"Simulated {robot_id}", rotate=True)
        credentials.append((robot_id, token))
    return credentials


def mission_sink():
    from fleet.redis import STREAMS, get_client

    client = get_client(STREAMS)
    stream = settings.FLEET_MISSION_STREAM

    def write(entries: list[dict[str, str]]) -> None:
        with client.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(stream, {"data": json.dumps(entry)})
            pipe.execute()

    return write


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


SUMMARY_COUNTS = [  # (label, key of Stats.summary()), in the order printed
    ("robots", "robots"),
    ("connections opened", "connects"),
    ("dropped on purpose (--lossy)", "drops"),
    ("closed by server or network", "disconnects"),
    ("handshakes rejected", "handshake_rejected"),
    ("taken over (4409/4403)", "replaced"),
    ("throttled (4429)", "throttled"),
    ("frames submitted", "submitted"),
    ("frames acked", "acked"),
    ("frames rejected", "rejected"),
    ("frames dropped (buffer full)", "dropped"),
    ("frames still buffered", "buffered"),
    ("submitted while offline", "offline_submitted"),
]


class Command(BaseCommand):
    help = "Simulate robots streaming realistic telemetry to a running Fleet Telemetry service."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs):
        # `--robot 5` must not quietly mean `--robots 5`, nor `--pre x` mean `--prefix x`.
        return super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--robots", type=int, default=10, help="number of robots (default 10)")
        parser.add_argument("--rate", type=float, default=1.0, help="frames per second per robot (default 1)")
        parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (default: until Ctrl-C)")
        parser.add_argument("--url", default="ws://127.0.0.1:8000", help="service URL (default ws://127.0.0.1:8000)")
        parser.add_argument("--missions", type=float, default=0.0, metavar="PER_S", help="mission updates per second")
        parser.add_argument("--lossy", action="store_true", help="drop and reconnect robots at random, backfill")
        parser.add_argument("--prefix", default="sim", help="robot id prefix (default sim: sim-0001, ...)")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
        parser.add_argument(
            "--take-over",
            action="store_true",
            help="replace robots of this prefix that are connected now (e.g. another simulator's)",
        )

    _replaced_reported = 0

    def handle(self, *args, **options):
        count, rate = options["robots"], options["rate"]
        if not 1 <= count <= 9999:
            raise CommandError("--robots must be between 1 and 9999")
        if rate <= 0:
            raise CommandError("--rate must be positive")
        limit = settings.TELEMETRY_MAX_FRAMES_PER_SECOND
        if rate > limit:
            # The server rejects the excess as rate_limited; a simulator should model robots that behave.
            self.stderr.write(
                f"--rate {rate:g} is above the server's limit of {limit} frames/s per robot; using {limit}."
            )
            rate = float(limit)
        prefix = options["prefix"]
        ids = robot_ids(count, prefix)
        busy = connected_now(ids)
        if busy and not options["take_over"]:
            # Provisioning rotates tokens: the robots connected now (another simulator's, say) would be
            # closed (4403, token rotated) and, their tokens gone, never come back.
            raise CommandError(
                f"{plural(len(busy), 'robot')} of prefix {prefix!r} {'is' if len(busy) == 1 else 'are'} "
                f"connected right now ({busy[0]}{' …' if len(busy) > 1 else ''}), probably to another simulate_fleet. "
                f"Starting would issue new tokens and replace them. Pick another prefix, e.g. "
                f"--prefix {free_prefix(prefix, count)}, or pass --take-over to replace them."
            )
        credentials = provision(ids)
        span = ids[0] if count == 1 else f"{ids[0]} … {ids[-1]}"
        self.stdout.write(f"Provisioned {plural(count, 'robot')} ({span}); connecting to {options['url']}")
        config = SimulationConfig(
            url=options["url"], rate=rate, duration=options["duration"], lossy=options["lossy"], seed=options["seed"]
        )
        if options["verbosity"] < 2:
            # Each robot's client logs its connects and reconnects; the progress line sums them up.
            logging.getLogger("fleet_client").setLevel(logging.WARNING)
        try:
            stats = asyncio.run(self._run(config, credentials, options["missions"]))
        except asyncio.CancelledError:
            # The second Ctrl-C: the robots were cut off, so there is no honest summary to print.
            raise CommandError("Quit at once: frames not yet acknowledged were abandoned.", returncode=130) from None
        self._report_replaced(stats)
        self._summary(stats)
        if stats.gave_up:
            errors = ", ".join(f"{code} {n}" for code, n in sorted(stats.errors.items())) or "none"
            raise CommandError(
                f"{options['url']} did not answer: {stats.gave_up} (errors: {errors}). "
                "Is the service running (make run), and is --url right?"
            )

    async def _run(self, config: SimulationConfig, credentials: list[tuple[str, str]], missions: float) -> Stats:
        stop = asyncio.Event()
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            # The first Ctrl-C lets robots finish their in-flight frames; a second one cuts them off.
            if stop.is_set():
                main.cancel()
                return
            self.stdout.write("Stopping (Ctrl-C again to quit at once)…")
            stop.set()

        handled = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, interrupt)
                handled.append(signum)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread: the caller handles signals
        try:
            return await simulate(
                config,
                credentials,
                stop=stop,
                on_progress=self._progress,
                missions_per_second=missions,
                mission_sink=mission_sink() if missions > 0 else None,
            )
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    def _report_replaced(self, stats: Stats) -> None:
        # Replaced robots stop for good (their token was rotated): say so when it happens, not only at the end.
        if stats.replaced > self._replaced_reported:
            self._replaced_reported = stats.replaced
            self.stderr.write(
                f"{plural(stats.replaced, 'robot')} taken over (4409 replaced, or 4403 token rotated or revoked), "
                "e.g. by another simulate_fleet with the same --prefix; those robots stop."
            )

    def _progress(self, stats: Stats) -> None:
        self._report_replaced(stats)
        w = stats.window()
        self.stdout.write(
            f"{time.strftime('%H:%M:%S')}  connected {stats.connected}/{stats.robots}  "
            f"submitted {w['submitted']}  acked {w['acked']}  rejected {w['rejected']}  "
            f"buffered {w['buffered']}  dropped {w['dropped']}  "
            f"ack p50 {_ms(w['p50'])}  p99 {_ms(w['p99'])}  ({plural(w['recent'], 'frame')} in the last second)"
        )

    def _summary(self, stats: Stats) -> None:
        s = stats.summary()
        rate = s["submitted"] / s["seconds"] if s["seconds"] else 0.0
        rows = [(label, s[key]) for label, key in SUMMARY_COUNTS]
        rows += [
            ("frames/s", f"{rate:.1f}"),
            ("ack p50", _ms(s["ack_p50_ms"])),
            ("ack p99", _ms(s["ack_p99_ms"])),
            ("ack max", _ms(s["ack_max_ms"])),
            ("seconds", f"{s['seconds']:.1f}"),
        ]
        if s["missions"]:
            total = sum(s["missions"].values())
            detail = ", ".join(f"{status} {n}" for status, n in sorted(s["missions"].items()))
            rows.append(("mission updates", f"{total} ({detail})"))
        if s["errors"]:
            rows.append(("errors", ", ".join(f"{code} {n}" for code, n in sorted(s["errors"].items()))))
        width = max(len(label) for label, _ in rows)
        self.stdout.write("")
        self.stdout.write(f"| {'':<{width}} | value |")
        self.stdout.write(f"|{'-' * (width + 2)}|-------|")
        for label, value in rows:
            self.stdout.write(f"| {label:<{width}} | {value} |")
