"""`make soak`: a fleet of simulated robots against a whole stack for minutes, then an exact account.

    python -m bench.soak [--robots 1000] [--rate 1] [--minutes 10 | --seconds S] [--missions 20] [--use-configured]

By default it runs its own stack in a temporary directory, like `runfleet` does: an embedded redis-server,
a fresh SQLite database (migrated, schedules created), one daphne (`fleet.serve`) and one `qcluster`
(aggregation every METRICS_AGGREGATION_INTERVAL, default 30 s). With --use-configured it uses DATABASE_URL
and REDIS_URL from the environment instead (it adds robots `soak-NNNN` and mission entries there).

The robots come from telemetry.simulator (the `simulate_fleet` core); mission status entries are written to
the mission stream while they run. At the end it checks, and writes to var/soak/<timestamp>.md:
- frames submitted / acked / rejected / lost (lost = submitted and never acked: still buffered, or dropped;
  must be 0), and the server's own count of accepted frames against the acks;
- ack latency p50/p99 per time window;
- RSS of daphne, qcluster (with its workers) and Redis at the start (after the fleet connected) and the end
  (growth must stay under 10%), and per window: <timestamp>.png plots RSS and ack p99 over time;
- the mission counters against the entries written, exactly (after one final aggregation run that takes the
  entries written since the last scheduled run).
It exits non-zero when a check fails. SOAK_MINUTES sets the default duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent
RSS_GROWTH_LIMIT = 0.10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int, children: bool = False) -> float:
    try:
        process = psutil.Process(pid)
        processes = [process, *(process.children(recursive=True) if children else [])]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def percentile(values, q: float) -> float | None:
    from telemetry.simulator import percentile as nearest_rank

    return nearest_rank(values, q)


@dataclass
class Window:
    at: float  # seconds since the fleet started
    sent: int
    acked: int
    p50: float | None
    p99: float | None
    connected: int
    rss: dict[str, float]  # MiB per process at the window's end


@dataclass
class Stack:
    """The processes under test and where they write."""

    env: dict[str, str]
    logs: Path
    daphne: subprocess.Popen | None = None
    qcluster: subprocess.Popen | None = None
    redis_pid: int | None = None
    port: int = 0
    files: list = field(default_factory=list)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        self.files.append(log)
        return subprocess.Popen(
            args, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def rss(self, redis_client) -> dict[str, float]:
        if self.redis_pid:
            redis_rss = rss_mib(self.redis_pid)
        else:
            redis_rss = int(redis_client.info("memory")["used_memory_rss"]) / 2**20
        from django.conf import settings

        # The streams are data the service keeps on purpose (events up to FLEET_EVENT_STREAM_MAXLEN; missions
        # until their producer trims them): Redis' own memory is what is left.
        streams = sum(
            int(redis_client.memory_usage(key, samples=0) or 0) / 2**20
            for key in (settings.FLEET_EVENT_STREAM, settings.FLEET_MISSION_STREAM)
        )
        return {
            "daphne": rss_mib(self.daphne.pid),
            "qcluster": rss_mib(self.qcluster.pid, children=True),
            "redis": redis_rss,
            "redis streams (data)": streams,
            "redis without streams": redis_rss - streams,
        }

    def stop(self) -> None:
        for process in (self.daphne, self.qcluster):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (self.daphne, self.qcluster):
            if process is None:
                continue
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        for log in self.files:
            log.close()


def wait_http(url: str, process: subprocess.Popen, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {within:.0f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--robots", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1.0, help="frames per second per robot")
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")))
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--missions", type=float, default=20.0, help="mission status entries per second")
    parser.add_argument("--window", type=float, default=None, help="seconds per latency row (default: ~20 rows)")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "var" / "soak")
    parser.add_argument("--use-configured", action="store_true", help="use DATABASE_URL and REDIS_URL as set")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = args.seconds if args.seconds is not None else args.minutes * 60
    window = args.window or max(5.0, round(duration / 20))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / f"{stamp}-logs"
    logs.mkdir()
    workdir = Path(tempfile.mkdtemp(prefix="fleet-soak-"))
    redis_server = None
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "fleet.settings"}
    if not args.use_configured:
        from fleet.embedded_redis import EmbeddedRedis

        redis_server = EmbeddedRedis(workdir / "redis", persist=False).start()
        env.update(
            REDIS_URL=redis_server.url,
            DATABASE_URL=f"sqlite:///{workdir / 'soak.sqlite3'}",
            FLEET_VAR_DIR=str(workdir / "var"),
        )
    # This process provisions robots, writes missions and reads the counters: same settings as the stack.
    os.environ.update({key: env[key] for key in ("REDIS_URL", "DATABASE_URL", "FLEET_VAR_DIR") if key in env})
    os.environ["DJANGO_SETTINGS_MODULE"] = "fleet.settings"
    import django

    django.setup()
    stack = Stack(env=env, logs=logs, redis_pid=redis_server.process.pid if redis_server else None)
    try:
        result = run(args, stack, duration, window)
    finally:
        stack.stop()
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    plotted = plot(result["windows"], args.out / f"{stamp}.png")
    report = render(result, args, duration, stamp, logs, plotted)
    path = args.out / f"{stamp}.md"
    path.write_text(report)
    print(report)
    print(f"written to {path}")
    if args.json:
        print(json.dumps(result, default=str))
    return 0 if result["ok"] else 1


def run(args: argparse.Namespace, stack: Stack, duration: float, window: float) -> dict:
    from django.conf import settings
    from django.core.management import call_command

    from fleet.redis import get_client
    from metrics.aggregation import aggregate_mission_metrics
    from telemetry.flusher import FRAMES_KEY
    from telemetry.robots import create_robot
    from telemetry.simulator import SimulationConfig, Stats, simulate

    call_command("migrate", verbosity=0)
    client = get_client()
    stream = settings.FLEET_MISSION_STREAM
    start_counts = counter_totals()
    frames_before = int(client.hget(FRAMES_KEY, "accepted") or 0)

    stack.port = free_port()
    stack.daphne = stack.start(
        "daphne", [sys.executable, "-m", "fleet.serve", "--bind", "127.0.0.1", "--port", str(stack.port)]
    )
    stack.qcluster = stack.start("qcluster", [sys.executable, "manage.py", "qcluster"])
    wait_http(f"http://127.0.0.1:{stack.port}/healthz", stack.daphne)

    credentials = []
    for n in range(1, args.robots + 1):
        _, token = create_robot(f"soak-{n:04d}", name=f"Soak robot {n}", rotate=True)
        credentials.append((f"soak-{n:04d}", token))

    def sink(entries: list[dict[str, str]]) -> None:
        with client.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(stream, {"data": json.dumps(entry)})
            pipe.execute()

    windows: list[Window] = []
    rss: dict[str, dict[str, float]] = {}
    state = {"from": 0, "sent": 0, "acked": 0, "next": None, "t0": None}

    def progress(stats: Stats) -> None:
        now = time.monotonic()
        if state["t0"] is None:
            state["t0"] = now
            state["next"] = now + window
        if "start" not in rss and stats.connected == stats.robots and now - state["t0"] >= min(10.0, duration / 3):
            rss["start"] = stack.rss(client)
        if now < state["next"]:
            return
        state["next"] += window
        recent = stats.latencies_ms[state["from"] :]
        totals = stats.totals()
        windows.append(
            Window(
                at=round(now - state["t0"]),
                sent=totals["submitted"] - state["sent"],
                acked=totals["acked"] - state["acked"],
                p50=percentile(recent, 0.5),
                p99=percentile(recent, 0.99),
                connected=stats.connected,
                rss=stack.rss(client),
            )
        )
        state.update({"from": len(stats.latencies_ms), "sent": totals["submitted"], "acked": totals["acked"]})
        print(
            f"{time.strftime('%H:%M:%S')} t+{windows[-1].at}s connected {stats.connected}/{stats.robots} "
            f"submitted {totals['submitted']} acked {totals['acked']} "
            f"p50 {fmt(windows[-1].p50)} p99 {fmt(windows[-1].p99)}",
            flush=True,
        )

    config = SimulationConfig(
        url=f"ws://127.0.0.1:{stack.port}",
        rate=args.rate,
        duration=duration,
        seed=1,
    )
    started = time.monotonic()
    stats = asyncio.run(
        simulate(config, credentials, on_progress=progress, missions_per_second=args.missions, mission_sink=sink)
    )
    elapsed = time.monotonic() - started
    rss.setdefault("start", stack.rss(client))
    rss["end"] = stack.rss(client)
    for process, name in ((stack.daphne, "daphne"), (stack.qcluster, "qcluster")):
        if process.poll() is not None:
            raise RuntimeError(f"{name} died during the soak with {process.returncode}; see {stack.logs}")

    # The qcluster counted what its scheduled runs reached; one more run takes the rest.
    scheduled_runs = aggregation_runs(client)
    counted_by_schedule = delta(counter_totals(), start_counts)
    final = aggregate_mission_metrics()
    counted = delta(counter_totals(), start_counts)
    written = dict(stats.missions)
    summary = stats.summary()
    time.sleep(0.5)  # the server's last flush interval
    server_accepted = int(client.hget(FRAMES_KEY, "accepted") or 0) - frames_before
    lost = summary["submitted"] - summary["acked"] - summary["rejected"]
    growth = {
        name: (rss["end"][name] - rss["start"][name]) / rss["start"][name] if rss["start"][name] else 0.0
        for name in rss["start"]
    }
    checks = {
        "no frame lost": lost == 0,
        "server accepted exactly the acked frames": server_accepted == summary["acked"],
        "counters equal the entries written": counted == {**written, "invalid": 0},
        "RSS growth under 10% (daphne, qcluster, Redis without its streams)": all(
            growth[name] < RSS_GROWTH_LIMIT for name in ("daphne", "qcluster", "redis without streams")
        ),
        "daphne and qcluster never died": True,
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "robots": args.robots,
        "rate": args.rate,
        "elapsed": elapsed,
        "summary": summary,
        "lost": lost,
        "server_accepted": server_accepted,
        "windows": [vars(w) for w in windows],
        "rss": rss,
        "growth": growth,
        "written": written,
        "counted": counted,
        "counted_by_schedule": counted_by_schedule,
        "scheduled_runs": scheduled_runs,
        "final_run": final.summary(),
    }


def counter_totals() -> dict[str, int]:
    from metrics.models import Counter

    totals = {"invalid": 0}
    for counter in Counter.objects.filter(name__in=["mission_status_total", "mission_entries_invalid_total"]):
        key = counter.labels.get("status", "invalid") if counter.name == "mission_status_total" else "invalid"
        totals[key] = totals.get(key, 0) + counter.value
    return totals


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    keys = set(after) | set(before)
    return {key: after.get(key, 0) - before.get(key, 0) for key in keys if after.get(key, 0) - before.get(key, 0)} | {
        "invalid": after.get("invalid", 0) - before.get("invalid", 0)
    }


def aggregation_runs(client) -> list[dict]:
    """The qcluster's aggregation runs that counted something, from the event stream."""
    from django.conf import settings

    runs = []
    for _, fields in client.xrange(settings.FLEET_EVENT_STREAM):
        if fields[b"type"] == b"metrics.aggregation_completed":
            payload = json.loads(fields[b"data"])["payload"]
            runs.append({"at": payload["timestamp"], "entries": payload["entries_processed"]})
    return runs


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def plot(windows: list[dict], path: Path) -> Path | None:
    """RSS of each process and ack p99 over time, side by side; None when there is nothing to plot."""
    if not windows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [w["at"] for w in windows]
    figure, (memory, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in ("daphne", "qcluster", "redis"):
        memory.plot(times, [w["rss"][name] for w in windows], "o-", markersize=3, label=name)
    latency.plot(times, [w["p99"] for w in windows], "o-", markersize=3, color="C3", label="ack p99")
    latency.plot(times, [w["p50"] for w in windows], ":", color="grey", label="ack p50")
    memory.set(xlabel="t (s)", ylabel="MiB", title="RSS")
    latency.set(xlabel="t (s)", ylabel="ms", title="Ack latency per window")
    for axes in (memory, latency):
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def render(
    result: dict, args: argparse.Namespace, duration: float, stamp: str, logs: Path, plotted: Path | None = None
) -> str:
    s = result["summary"]
    lines = [
        f"# Soak {stamp}",
        "",
        f"{result['robots']} robots at {result['rate']:g} Hz for {duration:.0f} s ({result['elapsed']:.0f} s with "
        f"connect and drain), {args.missions:g} mission entries/s; stack: "
        f"{'configured DATABASE_URL/REDIS_URL' if args.use_configured else 'temporary SQLite + embedded Redis'}, "
        "one daphne, one qcluster. Logs: " + str(logs.relative_to(BASE_DIR) if logs.is_relative_to(BASE_DIR) else logs),
        "",
        "## Verdict",
        "",
        *(f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in result["checks"].items()),
        "",
        "## Frames",
        "",
        "| submitted | acked | rejected | lost | buffered at close | server accepted | connects | disconnects |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s['submitted']} | {s['acked']} | {s['rejected']} | {result['lost']} | {s['buffered']} | "
        f"{result['server_accepted']} | {s['connects']} | {s['disconnects']} |",
        "",
        f"Ack latency over the whole run: p50 {fmt(s['ack_p50_ms'])}, p99 {fmt(s['ack_p99_ms'])}, "
        f"max {fmt(s['ack_max_ms'])}. Client errors: {s['errors'] or 'none'}.",
        "",
        "## Ack latency over time",
        "",
        *([f"![RSS and ack p99 over time]({plotted.name})", ""] if plotted else []),
        "| t (s) | connected | frames submitted | acked | p50 | p99 |",
        "|---|---|---|---|---|---|",
        *(
            f"| {w['at']} | {w['connected']} | {w['sent']} | {w['acked']} | {fmt(w['p50'])} | {fmt(w['p99'])} |"
            for w in result["windows"]
        ),
        "",
        "## Memory (RSS, MiB)",
        "",
        "| process | start | end | growth |",
        "|---|---|---|---|",
        *(
            f"| {name} | {result['rss']['start'][name]:.1f} | {result['rss']['end'][name]:.1f} | "
            f"{result['growth'][name] * 100:+.1f}% |"
            for name in result["rss"]["start"]
        ),
        "",
        "Start is sampled once every robot is connected and streaming; qcluster includes its worker processes. "
        "The streams grow by design (the event stream up to FLEET_EVENT_STREAM_MAXLEN entries, the mission stream "
        "until its producer trims it), so Redis is judged without them.",
        "",
        "## Mission counters",
        "",
        "| status | entries written | counted by scheduled runs | counted in the end |",
        "|---|---|---|---|",
        *(
            f"| {status} | {result['written'].get(status, 0)} | {result['counted_by_schedule'].get(status, 0)} | "
            f"{result['counted'].get(status, 0)} |"
            for status in sorted(set(result["written"]) | set(result["counted"]))
        ),
        "",
        f"Scheduled aggregation runs that counted entries: {sum(1 for r in result['scheduled_runs'] if r['entries'])}"
        f" (all runs: {len(result['scheduled_runs'])}; gaps between runs: "
        f"{gaps(result['scheduled_runs'])}). Final run: {result['final_run']}.",
        "",
    ]
    return "\n".join(lines)


def gaps(runs: list[dict]) -> str:
    times = sorted(run["at"] for run in runs)
    values = [b - a for a, b in zip(times, times[1:], strict=False)]
    return ", ".join(f"{value:.0f} s" for value in values) or "-"


if __name__ == "__main__":
    sys.exit(main())
