"""Benchmark: mission aggregation entries/s from a backlog, and the cost of an idle run.

`run(quick)` starts a child process with its own SQLite database and its own embedded Redis
(or a private stream key on REDIS_URL), so a benchmark never touches the service's counters.
Run alone: `python bench/aggregation.py [--quick]`.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STATUSES = ["completed", "failed", "in_progress", "cancelled", "queued"]


def run(quick: bool) -> list[dict]:
    """Rows of {case, scenario, metric, value, unit} measured in a child process."""
    with tempfile.TemporaryDirectory(prefix="bench-aggregation-") as var_dir:
        env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        env.update(
            FLEET_VAR_DIR=var_dir,
            DJANGO_SETTINGS_MODULE="fleet.settings",
            FLEET_MISSION_STREAM=f"bench:missions:{secrets.token_hex(4)}",
            DJANGO_LOG_LEVEL="WARNING",
            # Production mode: no debug query log growing inside the measured loop.
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        )
        args = [sys.executable, str(Path(__file__).resolve()), "--child"] + (["--quick"] if quick else [])
        done = subprocess.run(args, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"aggregation benchmark failed:\n{done.stdout}\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def _child(quick: bool) -> list[dict]:
    sys.path.insert(0, str(BASE_DIR))
    embedded = None
    if not os.environ.get("REDIS_URL"):
        from fleet.embedded_redis import EmbeddedRedis

        embedded = EmbeddedRedis(Path(os.environ["FLEET_VAR_DIR"]) / "redis", persist=False).start()
        os.environ["REDIS_URL"] = embedded.url
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from fleet.redis import get_client
    from metrics.aggregation import aggregate_mission_metrics
    from metrics.models import StreamCursor

    call_command("migrate", interactive=False, verbosity=0)
    client = get_client()
    stream = settings.FLEET_MISSION_STREAM
    rows: list[dict] = []

    def fill(count: int, start: int) -> None:
        for chunk in range(start, start + count, 1000):
            pipe = client.pipeline(transaction=False)
            for n in range(chunk, min(chunk + 1000, start + count)):
                # About 2% invalid entries, as a real producer might send.
                data = "not json" if n % 50 == 0 else json.dumps({"mission_id": f"m-{n}", "status": STATUSES[n % 5]})
                pipe.xadd(stream, {"data": data})
            pipe.execute()

    def row(scenario: str, metric: str, value: float, unit: str) -> None:
        rows.append(
            {"case": "aggregation", "scenario": scenario, "metric": metric, "value": round(value, 3), "unit": unit}
        )

    def timed(**kwargs) -> tuple[float, float, object]:
        wall, cpu = time.perf_counter(), time.process_time()
        result = aggregate_mission_metrics(**kwargs)
        return time.perf_counter() - wall, time.process_time() - cpu, result

    def idle(scenario: str) -> None:
        if embedded is not None:
            client.config_resetstat()  # our private server: its command stats are ours alone
        runs = [timed() for _ in range(30)]
        assert all(result.entries_processed == 0 for _, _, result in runs)
        row(scenario, "idle run wall p50", statistics.median(w for w, _, _ in runs) * 1000, "ms")
        row(scenario, "idle run CPU p50", statistics.median(c for _, c, _ in runs) * 1000, "ms")
        if embedded is not None:
            # Server-side time of the idle probe: independent of how busy the machine is.
            stats = client.info("commandstats")
            row(scenario, "idle run Redis time (XRANGE)", stats["cmdstat_xrange"]["usec_per_call"], "µs")

    # Other work on the machine shows up in wall-clock rates; the CPU per entry is steadier.
    row("machine", "load average (1 min) at start", os.getloadavg()[0], "")
    total = 0
    for backlog in [100_000] if quick else [100_000, 1_000_000]:
        fill(backlog - total, total)
        total = backlog
        label = f"backlog {backlog // 1000}k (stream length {client.xlen(stream):,})"
        # Count the whole backlog from the start of the stream.
        StreamCursor.objects.all().delete()
        wall, cpu, result = timed(max_entries=backlog)
        assert result.entries_processed == backlog, result
        row(label, "entries/s", result.entries_processed / wall, "entries/s")
        row(label, "CPU per entry", cpu / result.entries_processed * 1e6, "µs")
        idle(label)
        fill(1000, total)
        total += 1000
        wall, _, result = timed()
        assert result.entries_processed == 1000, result
        row(label, "run with 1,000 new entries", wall * 1000, "ms")
    client.delete(stream)
    if embedded is not None:
        embedded.stop()
    return rows


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(_child("--quick" in sys.argv)))
    else:
        for item in run("--quick" in sys.argv):
            print(f"{item['scenario']:<40} {item['metric']:<36} {item['value']:>12,.3f} {item['unit']}")
