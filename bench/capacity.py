"""The capacity case: what one robot at 1 Hz costs each shared resource, and what a fleet of N needs.

One daphne with everything on (and a dashboard watching) carries ROBOTS robots at 1 Hz. Over a
steady-state window (after the connection storm and a warm-up) it reads, before and after:
Redis INFO commandstats and total_net_input/output_bytes, the server's accepted-frame counter, the
daphne's CPU seconds, and the telemetry history table's rows and size. From the deltas come the
per-unit costs; redis-benchmark gives one Redis's ceiling on this machine. docs/scaling.md builds
its table from these rows: `make bench ARGS="--cases capacity"`.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import threading
import time
from urllib.parse import urlsplit

from bench.environment import Bench

FLEETS = (1_000, 10_000, 100_000, 1_000_000)
# redis-benchmark requests per test, by pipeline depth: a few seconds each.
REQUESTS = {1: 25_000, 16: 400_000}
HEADROOM = 0.5  # plan each daphne at half a core: reconnect storms, GC and deploys need the rest


def _redis_info(client) -> dict:
    """Commands run so far (by name; INFO itself left out) and network bytes."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    calls.pop("info", None)
    network = client.info("stats")
    return {"calls": calls, "in": network["total_net_input_bytes"], "out": network["total_net_output_bytes"]}


def _history_table() -> tuple[int, int | None]:
    """(rows, bytes with indexes or None) of the telemetry history."""
    from django.db import connection

    from telemetry.models import TelemetrySample

    rows = TelemetrySample.objects.count()
    table = TelemetrySample._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            return rows, cursor.fetchone()[0]
        try:
            cursor.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = %s OR tbl_name = %s", [table, table])
        except Exception:  # SQLite built without the dbstat table
            return rows, None
        return rows, cursor.fetchone()[0]


def _snapshot(client, server) -> dict:
    from telemetry.ingest import frame_totals

    rows, size = _history_table()
    return {
        "t": time.monotonic(),
        "redis": _redis_info(client),
        "accepted": frame_totals(client)["accepted"],
        "cpu": server.cpu_seconds(),
        "rows": rows,
        "bytes": size,
    }


def redis_ceiling(redis_url: str, quick: bool) -> dict:
    """One Redis's ops/s on this machine: redis-benchmark, pipelined (16) and not, SET/HSET/INCR."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        target = ["-s", parts.path]
    else:
        db = (parts.path or "/0").strip("/") or "0"
        target = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379), "--dbnum", db]
        if parts.password:
            target += ["-a", parts.password]
    rates = {}
    for pipeline in REQUESTS:
        done = subprocess.run(
            [binary, *target, "-t", "set,hset,incr", "-n", str(REQUESTS[pipeline] // (5 if quick else 1)),
             "-P", str(pipeline),
             "-c", "50", "-q", "--csv"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        found = [float(value) for value in re.findall(r'^"[A-Z]+[^"]*","([\d.]+)"', done.stdout, flags=re.MULTILINE)]
        if found:
            rates[pipeline] = round(sum(found) / len(found))
    return rates


def run(bench: Bench) -> list[dict]:
    from bench.cases import _start_dashboard
    from fleet.redis import get_client
    from telemetry import presence

    count = 200 if bench.quick else 1000
    robots = bench.robots(count)
    server = bench.fleet(bench.server_cpu)
    client = get_client()
    window = 3.0 if bench.quick else 20.0
    spec = {
        "mode": "paced",
        "url": f"ws://127.0.0.1:{server.port}",
        "robots": robots,
        "rate": 1.0,
        # Long enough to cover connecting, settling and the window, on a busy machine too.
        "duration": window + 40.0,
        "warmup": 0.0,
    }
    dashboard = None
    load: dict = {}
    try:
        dashboard = _start_dashboard(bench, server.port)
        thread = threading.Thread(target=lambda: load.update(bench.loadgen(spec, bench.client_cpu)))
        thread.start()
        # Steady state: the robots connected and sending (a busy machine may turn a few away), the storm over.
        # Robots start sending once all have connected; then wait for the count to stop growing.
        reporting, grown_at, deadline = 0, None, time.monotonic() + 180
        while reporting < count and thread.is_alive() and time.monotonic() < deadline:
            if grown_at is not None and time.monotonic() - grown_at > 5:
                break
            time.sleep(0.5)
            now = client.zcard(presence.REPORTING)
            if now > reporting:
                reporting, grown_at = now, time.monotonic()
        time.sleep(2.0 if bench.quick else 5.0)
        before = _snapshot(client, server)
        time.sleep(window)
        after = _snapshot(client, server)
        # The load must have run through the whole window, or the deltas mean nothing.
        complete = thread.is_alive()
        thread.join()
        if not complete or after["accepted"] == before["accepted"]:
            raise RuntimeError(f"no steady load through the measurement window: {str(load)[:500]}")
    finally:
        if dashboard:
            dashboard.kill()
        bench.stop(server)
    return measured_rows(count, before, after, redis_ceiling(bench.redis_url, bench.quick))


def measured_rows(count: int, before: dict, after: dict, ceiling: dict) -> list[dict]:
    seconds = after["t"] - before["t"]
    frames = after["accepted"] - before["accepted"]
    cpu = after["cpu"] - before["cpu"]
    calls = {
        name: after["redis"]["calls"].get(name, 0) - before["redis"]["calls"].get(name, 0)
        for name in after["redis"]["calls"]
    }
    commands = sum(calls.values())
    net_in = after["redis"]["in"] - before["redis"]["in"]
    net_out = after["redis"]["out"] - before["redis"]["out"]
    robot_seconds = count * seconds
    rows = after["rows"] - before["rows"]
    grown = None if after["bytes"] is None or before["bytes"] is None else after["bytes"] - before["bytes"]
    publishes = calls.get("publish", 0)
    unit = {
        "case": f"12 capacity: per-unit costs ({count} robots × 1 Hz, {seconds:.0f} s)",
        "frames/s": round(frames / seconds, 1),
        "daphne CPU (cores)": round(cpu / seconds, 3),
        "frames per daphne CPU-second": round(frames / cpu) if cpu else None,
        "Redis commands per frame": round(commands / frames, 3) if frames else None,
        "Redis commands per robot-second": round(commands / robot_seconds, 3),
        "Redis bytes in per frame": round(net_in / frames) if frames else None,
        "Redis bytes out per frame": round(net_out / frames) if frames else None,
        "DB rows per robot-hour": round(rows / robot_seconds * 3600, 1),
        "DB bytes per row": round(grown / rows) if grown and rows else None,
        "fan-out messages/s per process": round(publishes / seconds, 1),
        "robots per fan-out message": round(frames / publishes, 1) if publishes else None,
    }
    top = sorted(calls.items(), key=lambda item: -item[1])[:6]
    mix = {"case": "12 capacity: Redis commands per robot-second, by command"}
    mix.update({name: round(value / robot_seconds, 3) for name, value in top})
    out = [unit, mix]
    if ceiling:
        out.append(
            {"case": "12 capacity: one Redis's ceiling (redis-benchmark SET/HSET/INCR, 50 clients)"}
            | {f"ops/s pipeline {depth}": rate for depth, rate in ceiling.items()}
        )
    out += projections(unit, ceiling)
    return out


def projections(unit: dict, ceiling: dict) -> list[dict]:
    """What a fleet of N robots at 1 Hz needs, from the per-unit costs above."""
    per_cpu = unit["frames per daphne CPU-second"]
    per_robot = unit["Redis commands per robot-second"]
    bytes_per_frame = (unit["Redis bytes in per frame"] or 0) + (unit["Redis bytes out per frame"] or 0)
    rows_per_hour = unit["DB rows per robot-hour"]
    row_bytes = unit["DB bytes per row"]
    pipelined = ceiling.get(16)
    out = []
    for fleet in FLEETS:
        processes = math.ceil(fleet / (per_cpu * HEADROOM)) if per_cpu else None
        redis_ops = round(fleet * per_robot)
        row = {
            "case": f"12 capacity: {fleet:,} robots × 1 Hz",
            "daphne processes": processes,
            "Redis ops/s": redis_ops,
            "% of one Redis (pipelined)": round(100 * redis_ops / pipelined, 1) if pipelined else None,
            "Redis MB/s": round(fleet * bytes_per_frame / 1e6, 1),
            "DB inserts/s": round(fleet * rows_per_hour / 3600, 1),
            "DB growth GB/day": round(fleet * rows_per_hour * 24 * row_bytes / 1e9, 2) if row_bytes else None,
            # Every process with a dashboard receives every process's batches.
            "fan-out msgs/s into each process": round(unit["fan-out messages/s per process"] * processes)
            if processes
            else None,
            "frames/s to each dashboard": fleet,
        }
        out.append(row)
    return out
