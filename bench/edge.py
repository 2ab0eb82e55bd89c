"""Cases 8-10, the connection edge: a reconnect storm, a bogus-handshake flood and hostile sockets.

Each runs the real server (`python -m fleet.serve`) with the real per-robot limits (20 frames/s), and
the load from `bench.edge_load` in its own process. See bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from bench.environment import BASE_DIR, Bench

STORM_ROBOTS = 10_000
STORM_CONCURRENCY = 500
# The limits robots really get: FLEET_ENV lifts the frame limit for the max-load cases, not here.
REAL_LIMITS = {"TELEMETRY_MAX_FRAMES_PER_SECOND": "20", "TELEMETRY_IDLE_TIMEOUT": "120"}


def edge_load(bench: Bench, spec: dict, timeout: float = 600) -> dict:
    return bench.loadgen(spec, bench.client_cpu, timeout, module="bench.edge_load")


def provision(bench: Bench, count: int) -> tuple[list[list[str]], float]:
    """`count` robots made by `manage.py create_robot --from-file` (as an operator would); ([id, token]), seconds."""
    path = bench.directory / f"storm-{count}.txt"
    path.write_text("\n".join(f"storm-{n:05d}" for n in range(count)) + "\n")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", "create_robot", "--rotate", "--from-file", str(path)],
        cwd=BASE_DIR,
        env=bench.child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"create_robot failed:\n{done.stderr[-3000:]}")
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    return rows, seconds


class RssWatch:
    """The server's RSS, sampled every 0.2 s in a thread: the start and the peak."""

    def __init__(self, process) -> None:
        self.process = process
        self.start = self.peak = process.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.process.rss())
            except Exception:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round((self.peak - self.start) / 2**20, 1)


# --- 8. Connect storm ----------------------------------------------------------------------------


def storm(bench: Bench) -> list[dict]:
    count = 1000 if bench.quick else STORM_ROBOTS
    robots, provision_seconds = provision(bench, count)
    anonymous = [[f"echo-{n}", None] for n in range(count)]
    rows = []
    results = {}
    for label, start, who in (
        ("Channels echo, no auth", bench.channels_echo, anonymous),
        ("robot route", lambda cpu: bench.fleet(cpu, **REAL_LIMITS), robots),
    ):
        server = start(bench.server_cpu)
        try:
            spec = {"mode": "storm", "url": f"ws://127.0.0.1:{server.port}", "robots": who}
            results[label] = result = edge_load(bench, {**spec, "concurrency": STORM_CONCURRENCY})
        finally:
            bench.stop(server)
        bench.reset_redis()
        rows.append(
            {
                "case": f"8 connect storm: {label}, {count} at concurrency {STORM_CONCURRENCY}",
                "handshakes/s": result["handshakes_per_s"],
                "failed": count - result["acked"],
                "all first frames acked s": result["all_acked_s"],
            }
        )
        if result["errors"]:
            print(f"storm {label}: {result['errors']}", file=sys.stderr)
    floor = results["Channels echo, no auth"]["handshakes_per_s"]
    if floor and results["robot route"]["handshakes_per_s"]:
        rows[1]["% of echo handshakes/s"] = round(100 * results["robot route"]["handshakes_per_s"] / floor, 1)
    rows[1]["provisioning s"] = round(provision_seconds, 1)
    return rows


# --- 9. Bogus-handshake flood --------------------------------------------------------------------


def flood(bench: Bench) -> list[dict]:
    robots, _ = provision(bench, 1000 if bench.quick else STORM_ROBOTS)
    # One robot reconnects every 0.5 s: the per-robot connect limit (30 a minute) is lifted so that it is
    # not turned away with 4429 after 15 s, which would measure the limit, not the handshake.
    server = bench.fleet(bench.server_cpu, TELEMETRY_MAX_CONNECTS_PER_MINUTE="100000", **REAL_LIMITS)
    try:
        spec = {
            "mode": "flood",
            "url": f"ws://127.0.0.1:{server.port}",
            "robots": robots[:100],
            "rate": 1.0,
            "reconnector": robots[100],
            "reconnect_every": 0.5,
            "bogus_ids": [robot_id for robot_id, _ in robots[101:]],
            "bogus_rate": 500,
            "duration": bench.seconds(20),
            "warmup": 1.0,
        }
        cpu_before = server.cpu_seconds()
        result = edge_load(bench, spec)
        busy = (server.cpu_seconds() - cpu_before) / (spec["duration"] + spec["warmup"])
    finally:
        bench.stop(server)
    if result["stream_errors"] or result["reconnect_errors"]:
        print(f"flood: {result['stream_errors']} {result['reconnect_errors']}", file=sys.stderr)
    return [
        {
            "case": "9 bogus flood: 500 wrong-token handshakes/s, 100 robots × 1 Hz, one reconnecting every 0.5 s",
            "reconnect handshake p50 ms": result["handshake_p50_ms"],
            "reconnect handshake p99 ms": result["handshake_p99_ms"],
            "ack p50 ms": _round(result["ack_p50_ms"]),
            "ack p99 ms": _round(result["ack_p99_ms"]),
            "bogus offered": result["bogus_offered"],
            "bogus refused (403)": result["bogus_refused_403"],
            "bogus not refused": result["bogus_other"],
            "server CPU (cores)": round(busy, 2),
        }
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- 10. Hostile sockets -------------------------------------------------------------------------


def hostile(bench: Bench) -> list[dict]:
    robots, _ = provision(bench, 200)
    server = bench.fleet(bench.server_cpu, **REAL_LIMITS)
    try:
        good = {
            "mode": "paced",
            "url": f"ws://127.0.0.1:{server.port}",
            "robots": robots[:100],
            "rate": 1.0,
            "duration": bench.seconds(25),
            "warmup": 2.0,
        }
        watch = RssWatch(server)
        streaming = threading.Thread(target=lambda: good.update(result=bench.loadgen(good, bench.client_cpu)))
        streaming.start()
        time.sleep(good["warmup"])
        attack = {
            "mode": "attack",
            "host": "127.0.0.1",
            "port": server.port,
            "robots": robots[100:120],
            "large": 10,
            "large_bytes": 60_000,
            "errors": 10,
            "errors_rate": 20,
            "give_up_after": 40,
        }
        attacked = edge_load(bench, attack)
        streaming.join()
        growth = watch.stop()
    finally:
        bench.stop(server)
    load = good["result"]
    closed = [a["closed_after_s"] for a in attacked["attackers"]]
    if None in closed:
        unclosed = [a for a in attacked["attackers"] if a["closed_after_s"] is None]
        print(f"hostile: attackers not closed: {unclosed}", file=sys.stderr)
    by_kind = {
        kind: [a["closed_after_s"] for a in attacked["attackers"] if a["kind"] == kind] for kind in ("large", "errors")
    }
    return [
        {
            "case": "10 hostile sockets: 10 large-frame and 10 error-batch attackers vs 100 robots × 1 Hz",
            "server RSS growth MiB": growth,
            "attackers closed": sum(1 for c in closed if c is not None),
            "slowest close s (large)": max((c for c in by_kind["large"] if c is not None), default=None),
            "slowest close s (errors)": max((c for c in by_kind["errors"] if c is not None), default=None),
            "ack p50 ms": _round(load["p50_ms"]),
            "ack p99 ms": _round(load["p99_ms"]),
            "good robots' errors": sum(load["errors"].values()),
        }
    ]


CASES = {"storm": storm, "flood": flood, "hostile": hostile}
