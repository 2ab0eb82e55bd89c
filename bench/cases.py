"""The benchmark cases. Each takes the Bench and returns the rows of one run: {"case": label, measure: value}.

Measures are numbers (None when not measured); __main__ runs each case several times and reports
median, min and max per measure.
"""

from __future__ import annotations

import sys
import threading
import time

from bench.environment import Bench, CpuMeter
from bench.loadgen import percentile

CLIENTS = 100  # robots with one outstanding frame each, for the max-load cases


class Skip(Exception):
    """A case that cannot run here; the message says why."""


def _closed(url: str, robots: list, bench: Bench) -> dict:
    return {
        "mode": "closed",
        "url": url,
        "robots": robots,
        "duration": bench.seconds(15),
        "warmup": 0.5 if bench.quick else 1.0,
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _mib(value: int) -> float:
    return round(value / 2**20, 1)


# --- 1. Ceilings --------------------------------------------------------------------------------


def ceilings(bench: Bench) -> list[dict]:
    """The bare websockets echo and the minimal Channels echo on daphne, under the same load as ingest."""
    rows = []
    anonymous = [[f"echo-{n}", None] for n in range(CLIENTS)]
    for label, start in (("websockets echo", bench.bare_echo), ("Channels echo on daphne", bench.channels_echo)):
        server = start(bench.server_cpu)
        try:
            result = bench.loadgen(_closed(f"ws://127.0.0.1:{server.port}", anonymous, bench), bench.client_cpu)
        finally:
            bench.stop(server)
        rows.append(
            {
                "case": f"1 ceiling: {label}",
                "frames/s": result["frames_per_s"],
                "ack p50 ms": _ms(result["p50_ms"]),
                "ack p99 ms": _ms(result["p99_ms"]),
            }
        )
    return rows


# --- 2. Robot ingest, with a dashboard (and 3b: fan-out at max load) -----------------------------


def _dashboard_available() -> bool:
    try:
        from telemetry import routing
    except ImportError:
        return False
    return any("fleet/ws" in str(route.pattern) for route in routing.websocket_urlpatterns)


def _start_dashboard(bench: Bench, port: int):
    if not _dashboard_available():
        return None
    spec = {
        "mode": "dashboard",
        "url": f"ws://127.0.0.1:{port}/api/telemetry/fleet/ws?token={bench.dashboard_token()}",
        "origin": f"http://127.0.0.1:{port}",
    }
    dashboard = bench.held(spec, bench.client_cpu)
    dashboard.ready()
    return dashboard


def _share(load: dict, dashboard: dict) -> float | None:
    """Share (%) of robots whose last acknowledged frame reached the dashboard."""
    sent = load["last"]
    if not sent:
        return None
    seen = dashboard["last"]
    return round(100.0 * sum(1 for robot_id, seq in sent.items() if seen.get(robot_id, -1) >= seq) / len(sent), 2)


def _fanout_row(label: str, load: dict, dashboard: dict | None) -> dict:
    if dashboard is None:
        return {"case": f"{label} (skipped: no dashboard route)"}
    # Only frames sent inside the load's measurement window: not the connection storm before it.
    begin, end = load["window"]
    lags = [lag for reported_at, lag in dashboard["samples"] if begin <= reported_at < end]
    return {
        "case": label,
        "lag p50 ms": _ms(percentile(lags, 0.5)),
        "lag p99 ms": _ms(percentile(lags, 0.99)),
        "latest state reached %": _share(load, dashboard),
        "dashboard msgs": len(lags),
    }


def sweep_levels(bench: Bench) -> list[int]:
    return [1000, 4000] if bench.quick else [1000, 2000, 4000, 6000, 8000]


def bare_echo(bench: Bench, robots: list) -> dict:
    """The bare `Echo:` ASGI app on stock daphne, under the same load as the robot route."""
    server = bench.daphne_echo(bench.server_cpu)
    try:
        meter = CpuMeter(server)
        result = bench.loadgen(
            {**_closed(f"ws://127.0.0.1:{server.port}", robots, bench), "echo": True}, bench.client_cpu
        )
        cpu = meter.between(*result["window"])
    finally:
        bench.stop(server)
    return {
        "case": "2 reference: bare echo on stock daphne",
        "frames/s": result["frames_per_s"],
        "ack p50 ms": _ms(result["p50_ms"]),
        "ack p99 ms": _ms(result["p99_ms"]),
        "frames per server CPU-second": _per_cpu_second(result["frames"], cpu),
    }


def _per_cpu_second(frames: int, cpu_seconds: float | None) -> float | None:
    """Frames per CPU-second the server used in the measurement window: less sensitive than frames/s
    to other processes taking the server's core."""
    return round(frames / cpu_seconds) if cpu_seconds else None


def _percent(part: float | None, whole: float | None) -> float | None:
    return round(100 * part / whole, 1) if part and whole else None


def ingest(bench: Bench) -> list[dict]:
    """The real robot route with everything on and a dashboard watching; then a paced sweep for the plot.

    Each run first measures the bare echo on stock daphne, right before the route, so the ratio
    between the two comes from the same minute of a machine whose speed drifts.
    """
    robots = bench.robots(CLIENTS)
    reference = bare_echo(bench, robots)
    rows = [reference]
    server = bench.fleet(bench.server_cpu)
    dashboard = None
    try:
        spec = _closed(f"ws://127.0.0.1:{server.port}", robots, bench)
        rss_before = server.rss()
        dashboard = _start_dashboard(bench, server.port)
        meter = CpuMeter(server)
        load = bench.loadgen(spec, bench.client_cpu)
        per_cpu_second = _per_cpu_second(load["frames"], meter.between(*load["window"]))
        time.sleep(1.0)  # let the last flush reach the dashboard
        seen = dashboard.release() if dashboard else None
        row = {
            "case": "2 ingest: robot route, everything on",
            "frames/s": load["frames_per_s"],
            "ack p50 ms": _ms(load["p50_ms"]),
            "ack p99 ms": _ms(load["p99_ms"]),
            "rejected": load["rejected"],
            "server RSS growth MiB": _mib(server.rss() - rss_before),
            "frames per server CPU-second": per_cpu_second,
            "% of bare echo on daphne": _percent(load["frames_per_s"], reference["frames/s"]),
            "% of bare echo per CPU-second": _percent(per_cpu_second, reference["frames per server CPU-second"]),
        }
        if bench.floor:
            row["% of Channels echo"] = round(100 * load["frames_per_s"] / bench.floor, 1)
        rows.append(row)
        rows.append(_fanout_row("3 fan-out lag at max load", load, seen))
        for offered in sweep_levels(bench):
            paced = {**spec, "mode": "paced", "rate": offered / len(robots)}
            load = bench.loadgen(paced, bench.client_cpu)
            rows.append(
                {
                    "case": f"2 ingest paced at {offered}/s",
                    "offered/s": offered,
                    "frames/s": load["frames_per_s"],
                    "ack p50 ms": _ms(load["p50_ms"]),
                    "ack p99 ms": _ms(load["p99_ms"]),
                    "rejected": load["rejected"],
                }
            )
    finally:
        if dashboard:
            dashboard.kill()
        bench.stop(server)
    return rows


# --- 3. Fan-out lag at 1,000 robots × 1 Hz ------------------------------------------------------


def fanout(bench: Bench) -> list[dict]:
    count = 200 if bench.quick else 1000
    robots = bench.robots(count)
    server = bench.fleet(bench.server_cpu)
    dashboard = None
    try:
        spec = {
            "mode": "paced",
            "url": f"ws://127.0.0.1:{server.port}",
            "robots": robots,
            "rate": 1.0,
            "duration": bench.seconds(15),
            # Steady state: 1,000 robots connecting at once take 1-2 s to settle (README).
            "warmup": 2.0 if bench.quick else 5.0,
        }
        dashboard = _start_dashboard(bench, server.port)
        load = bench.loadgen(spec, bench.client_cpu)
        time.sleep(1.0)
        seen = dashboard.release() if dashboard else None
    finally:
        if dashboard:
            dashboard.kill()
        bench.stop(server)
    label = f"3 fan-out: {count} robots × 1 Hz"
    row = _fanout_row(label, load, seen)
    row.update(
        {
            "frames/s": load["frames_per_s"],
            "ack p50 ms": _ms(load["p50_ms"]),
            "ack p99 ms": _ms(load["p99_ms"]),
            "connected": load["connected"],
        }
    )
    return [row]


# --- 4. Idle connections ------------------------------------------------------------------------


def idle(bench: Bench) -> list[dict]:
    count = 1000 if bench.quick else 10_000
    robots = bench.robots(count)
    server = bench.fleet(bench.server_cpu)
    url = f"ws://127.0.0.1:{server.port}"
    try:
        rss_before = server.rss()
        holder = bench.held(
            {"mode": "idle", "url": url, "robots": robots, "connect_concurrency": 50}, bench.client_cpu, timeout=600
        )
        try:
            opened = holder.ready()
            time.sleep(1.0)
            rss_after = server.rss()
            fresh = bench.fresh_robot("bench-fresh")
            probe = {
                "mode": "paced",
                "url": url,
                "robots": [list(fresh)],
                "rate": 10.0,
                "duration": 2.0 if bench.quick else 10.0,
                "warmup": 0.0,
            }
            result = bench.loadgen(probe, bench.client_cpu)
        finally:
            held = holder.release()
    finally:
        bench.stop(server)
    connected = opened["connected"]
    if opened["errors"]:
        print(f"idle: connections that failed: {opened['errors']}", file=sys.stderr)
    return [
        {
            "case": f"4 idle connections (target {count})",
            "held": connected,
            "failed to connect": count - connected,
            "still open at the end": held["still_open"],
            "connects/s": round(connected / opened["connect_seconds"], 1) if opened["connect_seconds"] else None,
            "RSS per 1,000 MiB": _mib((rss_after - rss_before) * 1000 / connected) if connected else None,
            "server RSS MiB": _mib(rss_after),
            "fresh robot handshake ms": round(result["connect_seconds"] * 1000, 2),
            "fresh robot ack p50 ms": _ms(result["p50_ms"]),
            "fresh robot ack p99 ms": _ms(result["p99_ms"]),
        }
    ]


# --- 5. Scale-out -------------------------------------------------------------------------------


def _parallel(bench: Bench, specs: list[dict]) -> list[dict]:
    results: list[dict | None] = [None] * len(specs)
    errors: list[BaseException] = []

    def run(index: int, spec: dict) -> None:
        try:
            results[index] = bench.loadgen(spec)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, spec)) for n, spec in enumerate(specs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def scaleout(bench: Bench) -> list[dict]:
    """Two daphne processes (one per core) against one, same Redis; the load generators are not pinned.

    On two cores the load generators take CPU from the servers, so besides frames/s it reports the
    servers' CPU use and frames per server CPU-second: if two processes get as much done per
    CPU-second as one, nothing they share (Redis, the database) holds them back, and on free cores
    two processes reach twice one.
    """
    robots = bench.robots(CLIENTS)
    half = len(robots) // 2
    rows = []
    for processes in (1, 2):
        cpus = [bench.server_cpu, bench.client_cpu] if processes == 2 else [bench.server_cpu]
        servers = [bench.fleet(cpu) for cpu in cpus]
        try:
            specs = [
                _closed(f"ws://127.0.0.1:{servers[n % processes].port}", part, bench)
                for n, part in enumerate((robots[:half], robots[half:]))
            ]
            cpu_before, started = sum(server.cpu_seconds() for server in servers), time.monotonic()
            results = _parallel(bench, specs)
            busy = (sum(server.cpu_seconds() for server in servers) - cpu_before) / (time.monotonic() - started)
        finally:
            for server in servers:
                bench.stop(server)
        bench.reset_redis()
        rate = sum(result["frames_per_s"] for result in results)
        rows.append(
            {
                "case": f"5 scale-out: {processes} daphne",
                "frames/s": round(rate, 1),
                "server CPU (cores)": round(busy, 2),
                "frames per server CPU-second": round(rate / busy) if busy else None,
            }
        )
    if rows[0]["frames/s"]:
        rows[1]["× one process"] = round(rows[1]["frames/s"] / rows[0]["frames/s"], 2)
    if rows[0]["frames per server CPU-second"] and rows[1]["frames per server CPU-second"]:
        efficiency = rows[1]["frames per server CPU-second"] / rows[0]["frames per server CPU-second"]
        rows[1]["× one process per CPU-second"] = round(efficiency, 2)
    return rows


# --- 6, 7. Aggregation and event publishing (from their own modules) ----------------------------


def _numbered(number: int, rows: list[dict]) -> list[dict]:
    """Rows from the other modules, in either shape: wide ({case, measure: value}) or long
    ({case, scenario, metric, value, unit})."""
    out: list[dict] = []
    for row in rows:
        if "metric" in row and "value" in row:
            label = f"{number} {row.get('case', '')}: {row.get('scenario', '')}".rstrip(": ")
            unit = row.get("unit")
            measure = f"{row['metric']} ({unit})" if unit and unit not in row["metric"] else row["metric"]
            if out and out[-1]["case"] == label:
                out[-1][measure] = row["value"]
            else:
                out.append({"case": label, measure: row["value"]})
        else:
            out.append({**row, "case": f"{number} {row.get('case', '')}"})
    return out


def aggregation(bench: Bench) -> list[dict]:
    try:
        from bench import aggregation as module
    except ImportError:
        raise Skip("bench/aggregation.py is not there yet")
    return _numbered(6, module.run(bench.quick))


def events(bench: Bench) -> list[dict]:
    from bench import events as module

    return _numbered(7, module.run(bench.quick))


# --- 8. Alert evaluation ------------------------------------------------------------------------

# Ten rules; the bench robots report cpu 45.2, memory 62.8, latency 12.5, battery 78, so the last
# one holds for every robot: after it is raised, each flush evaluates all of them in Redis.
TEN_RULES = [
    ("bench_battery_low", "battery_percentage", "lt", 20.0),
    ("bench_battery_critical", "battery_percentage", "le", 5.0),
    ("bench_cpu_high", "cpu_usage", "gt", 90.0),
    ("bench_cpu_pegged", "cpu_usage", "ge", 99.0),
    ("bench_memory_high", "memory_usage", "gt", 95.0),
    ("bench_latency_high", "network_latency_ms", "gt", 500.0),
    ("bench_latency_extreme", "network_latency_ms", "ge", 2000.0),
    ("bench_not_reporting", "reporting", "is_false", 0.0),
    ("bench_cpu_idle", "cpu_usage", "lt", 1.0),
    ("bench_memory_busy", "memory_usage", "gt", 60.0),
]


def _use_rules(enabled: bool) -> None:
    from telemetry.models import Alert, AlertRule

    AlertRule.objects.all().update(enabled=False)
    Alert.objects.all().delete()
    if enabled:
        for name, metric, op, threshold in TEN_RULES:
            fields = {"metric": metric, "op": op, "threshold": threshold, "for_seconds": 0, "enabled": True}
            AlertRule.objects.update_or_create(name=name, defaults=fields)


def _evaluation_ms(robots: int, rounds: int) -> float:
    """Median CPU time of one flush's evaluation of `robots` changed robots against the ten rules, in this process.

    CPU, not wall time: the evaluation's Redis round trip is awaited, and the loop serves sockets meanwhile.
    """
    import asyncio

    from telemetry.alerts import AlertEvaluator, Rule

    rules = [
        Rule(1000 + i, name, metric, op, threshold, 0.0, None)
        for i, (name, metric, op, threshold) in enumerate(TEN_RULES)
    ]
    values = {
        f"bench-{n:05d}": {
            "cpu_usage": 45.2,
            "memory_usage": 62.8,
            "network_latency_ms": 12.5,
            "battery_percentage": 78.0,
        }
        for n in range(1, robots + 1)
    }

    async def measure() -> float:
        evaluator = AlertEvaluator()
        evaluator.set_rules(rules, time.monotonic())
        await evaluator.evaluate(values, time.time())  # raises the holding rule: the steady state follows
        timings = []
        for _ in range(rounds):
            started = time.process_time()
            await evaluator.evaluate(values, time.time())
            timings.append(time.process_time() - started)
        return sorted(timings)[len(timings) // 2] * 1000

    return asyncio.run(measure())


def alerts(bench: Bench) -> list[dict]:
    """Robot ingest (closed loop) with no alert rule, then with ten enabled: the throughput evaluation costs."""
    robots = bench.robots(CLIENTS)
    measured = {}
    try:
        for label, enabled in (("no rules", False), ("ten rules", True)):
            _use_rules(enabled)
            bench.reset_redis()
            server = bench.fleet(bench.server_cpu)
            try:
                cpu_before, started = server.cpu_seconds(), time.monotonic()
                load = bench.loadgen(_closed(f"ws://127.0.0.1:{server.port}", robots, bench), bench.client_cpu)
                busy = (server.cpu_seconds() - cpu_before) / (time.monotonic() - started)
            finally:
                bench.stop(server)
            # Frames per server CPU-second: on a shared machine the server rarely gets its whole core,
            # and this is what its throughput would be if it did.
            measured[label] = {**load, "per_cpu_s": load["frames_per_s"] / busy if busy else None}
    finally:
        _use_rules(False)
    base, ten = measured["no rules"]["per_cpu_s"], measured["ten rules"]["per_cpu_s"]
    # The same cost, measured directly: one flush's evaluation of every robot, and what it adds to each
    # frame when a flush carries one frame per robot (the most evaluation per frame there can be).
    bench.reset_redis()
    flush_ms = _evaluation_ms(len(robots), 20 if bench.quick else 200)
    per_frame_us = flush_ms * 1000 / len(robots)
    cpu_per_frame_us = 1e6 / base if base else None
    return [
        {
            "case": "11 alerts: ingest with ten rules enabled (one holding for every robot)",
            "frames/s no rules": measured["no rules"]["frames_per_s"],
            "frames/s ten rules": measured["ten rules"]["frames_per_s"],
            "frames per server CPU-s no rules": round(base) if base else None,
            "frames per server CPU-s ten rules": round(ten) if ten else None,
            "ack p99 ms no rules": _ms(measured["no rules"]["p99_ms"]),
            "ack p99 ms ten rules": _ms(measured["ten rules"]["p99_ms"]),
            "ingest cost %": round(100 * (base - ten) / base, 1) if base and ten else None,
            "evaluation CPU ms per flush of 100 robots": round(flush_ms, 3),
            "evaluation CPU µs per frame": round(per_frame_us, 2),
            "evaluation % of ingest CPU per frame": round(100 * per_frame_us / cpu_per_frame_us, 2)
            if cpu_per_frame_us
            else None,
        }
    ]


def capacity(bench: Bench) -> list[dict]:
    from bench import capacity as module

    return module.run(bench)


CASES = {
    "ceilings": ceilings,
    "ingest": ingest,
    "fanout": fanout,
    "idle": idle,
    "scaleout": scaleout,
    "aggregation": aggregation,
    "events": events,
    "alerts": alerts,
    # Alone: `make bench ARGS="--cases capacity"` (docs/scaling.md).
    "capacity": capacity,
}

# Cases 8-10, the connection edge, live in their own module.
from bench.edge import CASES as EDGE_CASES  # noqa: E402

CASES.update(EDGE_CASES)
