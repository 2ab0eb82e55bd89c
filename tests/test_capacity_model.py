"""The capacity case's arithmetic: per-unit costs from two snapshots, and the fleets they project to."""

from __future__ import annotations

from bench.capacity import measured_rows


def snapshot(t: float, accepted: int, cpu: float, calls: dict, net_in: int, net_out: int, rows: int, size: int) -> dict:
    return {
        "t": t,
        "accepted": accepted,
        "cpu": cpu,
        "redis": {"calls": calls, "in": net_in, "out": net_out},
        "rows": rows,
        "bytes": size,
    }


def test_it_derives_per_unit_costs_and_projects_them_to_each_fleet_size():
    before = snapshot(100.0, 5_000, 10.0, {"xadd": 1_000, "publish": 100}, 1_000_000, 500_000, 2_000, 400_000)
    # 1,000 robots for 10 s: 10,000 frames, 4 CPU-seconds, 8,000 commands, 2,800 rows of 100 bytes.
    after = snapshot(
        110.0, 15_000, 14.0, {"xadd": 7_000, "publish": 300, "hset": 1_800}, 8_000_000, 2_000_000, 4_800, 680_000
    )

    unit, mix, ceiling, *fleets = measured_rows(1_000, before, after, {1: 40_000, 16: 400_000})

    assert unit == {
        "case": "12 capacity: per-unit costs (1000 robots × 1 Hz, 10 s)",
        "frames/s": 1000.0,
        "daphne CPU (cores)": 0.4,
        "frames per daphne CPU-second": 2500,
        "Redis commands per frame": 0.8,
        "Redis commands per robot-second": 0.8,
        "Redis bytes in per frame": 700,
        "Redis bytes out per frame": 150,
        "DB rows per robot-hour": 1008.0,
        "DB bytes per row": 100,
        "fan-out messages/s per process": 20.0,
        "robots per fan-out message": 50.0,
    }
    assert mix == {
        "case": "12 capacity: Redis commands per robot-second, by command",
        "xadd": 0.6,
        "hset": 0.18,
        "publish": 0.02,
    }
    assert ceiling == {"case": ceiling["case"], "ops/s pipeline 1": 40_000, "ops/s pipeline 16": 400_000}
    assert fleets[2] == {
        "case": "12 capacity: 100,000 robots × 1 Hz",
        "daphne processes": 80,  # 100,000 / (2,500 × 0.5)
        "Redis ops/s": 80_000,
        "% of one Redis (pipelined)": 20.0,
        "Redis MB/s": 85.0,
        "DB inserts/s": 28_000.0,
        "DB growth GB/day": 241.92,
        "fan-out msgs/s into each process": 1_600,
        "frames/s to each dashboard": 100_000,
    }
    assert [row["daphne processes"] for row in fleets] == [1, 8, 80, 800]
