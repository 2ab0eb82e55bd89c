"""Event publishing: events/s one process publishes, what a publish costs its caller, and what the
platform's per-key fields beside `data` cost an entry (bytes in Redis, XADDs/s, encoding time).

Run alone with `python -m bench.events [--quick]`; `python -m bench` runs it with the other cases.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from telemetry.simulator import percentile


async def _send(count: int) -> list[float]:
    from telemetry import signals

    costs = []
    for n in range(count):
        started = time.perf_counter_ns()
        signals.connection_established.send(
            sender=None, robot_id="r2d2", connection_id=f"ws_r2d2_{n}", timestamp=time.time()
        )
        costs.append((time.perf_counter_ns() - started) / 1000)
    return costs


def _layout_cost(client, count: int) -> list[dict]:
    """Entries with only `type` and `data` against entries with the per-key fields beside them."""
    from fleet.events.envelope import make_envelope, stream_fields

    metrics = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}
    envelope = make_envelope(
        "telemetry.metrics_published", {"robot_id": "r2d2", "metrics": metrics, "timestamp": time.time()}
    )
    layouts = {
        "data only": lambda: {"type": envelope["type"], "data": json.dumps(envelope, separators=(",", ":"))},
        "data + per-key fields": lambda: stream_fields(envelope),
    }
    rows = []
    for name, encode in layouts.items():
        started = time.perf_counter_ns()
        entries = [encode() for _ in range(count)]
        encode_us = (time.perf_counter_ns() - started) / 1000 / count
        key = f"bench:layout:{name}"
        started = time.perf_counter()
        for first in range(0, count, 500):
            pipe = client.pipeline(transaction=False)
            for fields in entries[first : first + 500]:
                pipe.xadd(key, fields)
            pipe.execute()
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "case": f"event entry: {name}",
                "bytes/entry in Redis": round(client.memory_usage(key, samples=0) / count),
                "XADD/s": round(count / elapsed),
                "encode µs": round(encode_us, 2),
            }
        )
        client.delete(key)
    return rows


def run(quick: bool = False) -> list[dict]:
    from django.test import override_settings

    from fleet.embedded_redis import EmbeddedRedis
    from fleet.events.stream import get_publisher, reset_publisher
    from fleet.redis import new_client, reset_clients

    count = 20_000 if quick else 200_000
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedRedis(Path(directory) / "redis", persist=False).start()
        try:
            with override_settings(REDIS_URL=server.url, FLEET_EVENT_BUFFER=count):
                reset_clients()
                reset_publisher()
                publisher = get_publisher()
                asyncio.run(_send(1000))  # warm up: thread, connection, code paths
                publisher.flush(30)

                started = time.perf_counter()
                costs = asyncio.run(_send(count))
                publisher.flush(120)
                elapsed = time.perf_counter() - started
                rows.append(
                    {
                        "case": "events, Redis up",
                        "events/s": round(count / elapsed),
                        "caller p50 µs": round(statistics.median(costs), 1),
                        "caller p99 µs": round(percentile(costs, 0.99), 1),
                    }
                )

                server.stop()
                costs = asyncio.run(_send(count // 2))
                rows.append(
                    {
                        "case": "events, Redis down (buffered)",
                        "events/s": None,
                        "caller p50 µs": round(statistics.median(costs), 1),
                        "caller p99 µs": round(percentile(costs, 0.99), 1),
                    }
                )
                server.start()
                publisher.flush(60)
                reset_publisher()
                rows += _layout_cost(new_client(socket_timeout=60), count // 2)
        finally:
            server.stop()
            reset_clients()
    return rows


if __name__ == "__main__":
    import os
    import sys

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    django.setup()
    for row in run(quick="--quick" in sys.argv):
        print(row)
