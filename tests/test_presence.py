"""Fleet-wide presence, latest values and the fleet's Prometheus numbers, on the real Redis."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from telemetry import latest, presence
from telemetry.flusher import FRAMES_KEY
from telemetry.prometheus import FleetCollector

METRICS = {"cpu_usage": 1.0, "memory_usage": 2.0, "network_latency_ms": 3.0, "battery_percentage": 4.0}


def run(pipeline_steps, client) -> None:
    pipe = client.pipeline(transaction=False)
    pipeline_steps(pipe)
    pipe.execute()


async def test_a_robot_is_connected_while_one_of_its_leases_lives(redis_client):
    assert await presence.admit("r2d2", "ws_r2d2_1_aaaa") == (0, True)
    assert await presence.admit("r2d2", "ws_r2d2_2_bbbb") == (0, False)  # not alone: r2d2 already holds a lease
    assert await presence.admit("bb8", "ws_bb8_3_cccc") == (0, True)
    assert presence.fleet_counts() == {"active_connections": 3, "robots_connected": 2, "robots_reporting": 0}

    run(lambda pipe: presence.release_leases(pipe, [("ws_r2d2_1_aaaa", "r2d2")]), redis_client)
    assert presence.robot_states(["r2d2", "bb8", "c3po"]) == {
        "r2d2": {"connected": True, "reporting": False},
        "bb8": {"connected": True, "reporting": False},
        "c3po": {"connected": False, "reporting": False},
    }
    run(lambda pipe: presence.release_leases(pipe, [("ws_r2d2_2_bbbb", "r2d2")]), redis_client)
    assert presence.fleet_counts() == {"active_connections": 1, "robots_connected": 1, "robots_reporting": 0}
    assert presence.robot_states(["r2d2"]) == {"r2d2": {"connected": False, "reporting": False}}


async def until(condition, within: float = 15.0, step: float = 0.05) -> None:
    """Await `condition()` (an awaitable's result) until it is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(step)


async def test_leases_that_are_not_refreshed_vanish_within_the_ttl(redis_client, settings):
    settings.TELEMETRY_PRESENCE_TTL = 2.0
    await presence.admit("r2d2", "ws_r2d2_1_aaaa")
    await presence.admit("bb8", "ws_bb8_1_aaaa")

    async def r2d2_gone() -> bool:
        # bb8's process keeps refreshing, far more often than the TTL; r2d2's "died".
        run(lambda pipe: presence.refresh_leases(pipe, [("ws_bb8_1_aaaa", "bb8")]), redis_client)
        return not presence.robot_states(["r2d2"])["r2d2"]["connected"]

    started = time.monotonic()
    await until(r2d2_gone)

    assert time.monotonic() - started >= 1.5  # not before its lease ran out
    # Nobody removed r2d2's lease; it simply expired.
    assert presence.fleet_counts() == {"active_connections": 1, "robots_connected": 1, "robots_reporting": 0}
    assert presence.robot_states(["r2d2", "bb8"]) == {
        "r2d2": {"connected": False, "reporting": False},
        "bb8": {"connected": True, "reporting": False},
    }
    # Refreshes also trim what expired.
    run(lambda pipe: presence.refresh_leases(pipe, []), redis_client)
    assert redis_client.zrange(presence.LEASES, 0, -1) == [b"ws_bb8_1_aaaa"]


def test_a_robot_reports_until_its_last_frame_is_older_than_stale_after(redis_client, settings):
    settings.TELEMETRY_STALE_AFTER = 30
    now = time.time()
    run(lambda pipe: presence.mark_reporting(pipe, {"r2d2": now - 29, "bb8": now - 31}), redis_client)
    assert presence.robot_states(["r2d2", "bb8"]) == {
        "r2d2": {"connected": False, "reporting": True},
        "bb8": {"connected": False, "reporting": False},
    }
    assert presence.fleet_counts()["robots_reporting"] == 1
    # An older time never moves a robot's last frame back.
    run(lambda pipe: presence.mark_reporting(pipe, {"r2d2": now - 100}), redis_client)
    assert presence.robot_states(["r2d2"])["r2d2"]["reporting"] is True


async def test_the_connect_rate_is_counted_fleet_wide_and_says_when_to_retry(settings):
    settings.TELEMETRY_MAX_CONNECTS_PER_MINUTE = 3
    for n in range(3):
        assert (await presence.admit("r2d2", f"ws_r2d2_{n}_aaaa"))[0] == 0
    retry_after, alone = await presence.admit("r2d2", "ws_r2d2_9_aaaa")
    assert 59 < retry_after <= 60
    assert alone is False
    # Refused handshakes take no lease and no slot; other robots are not affected.
    assert presence.fleet_counts()["active_connections"] == 3
    assert await presence.admit("bb8", "ws_bb8_1_aaaa") == (0, True)


def test_latest_metrics_are_none_until_a_frame_is_stored(redis_client):
    assert latest.latest_metrics("r2d2") is None
    run(lambda pipe: latest.write_latest(pipe, {"r2d2": latest.encode(METRICS, 1703003456.5, 17)}), redis_client)
    assert latest.latest_metrics("r2d2") == {**METRICS, "reported_at": 1703003456.5, "seq": 17}
    assert latest.latest_metrics_many(["r2d2", "bb8"]) == {"r2d2": latest.latest_metrics("r2d2"), "bb8": None}


async def test_prometheus_shows_the_fleet_numbers_summed_over_processes(redis_client):
    await presence.admit("r2d2", "ws_r2d2_1_aaaa")
    await presence.admit("bb8", "ws_bb8_1_aaaa")
    run(lambda pipe: presence.mark_reporting(pipe, {"bb8": time.time()}), redis_client)
    # Two processes' flushers each add their counts.
    redis_client.hincrby(FRAMES_KEY, "accepted", 40)
    redis_client.hincrby(FRAMES_KEY, "accepted", 2)
    redis_client.hincrby(FRAMES_KEY, "rejected", 3)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    lines = [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]
    assert lines == [
        "fleet_active_connections 2.0",
        "fleet_robots_connected 2.0",
        "fleet_robots_reporting 1.0",
        'telemetry_frames_total{result="accepted"} 42.0',
        'telemetry_frames_total{result="rejected"} 3.0',
    ]


async def test_a_sweep_hands_each_time_driven_change_to_exactly_one_caller(redis_client, settings):
    settings.TELEMETRY_PRESENCE_TTL = 2.0
    settings.TELEMETRY_STALE_AFTER = 30
    assert await presence.asweep() == []
    await presence.admit("r2d2", "ws_r2d2_1_aaaa")  # its process will "die": no refresh
    await presence.admit("bb8", "ws_bb8_1_aaaa")
    run(lambda pipe: presence.mark_reporting(pipe, {"c3po": time.time() - 28, "bb8": time.time()}), redis_client)
    assert await presence.asweep() == []
    handed: list[str] = []

    async def both_handed() -> bool:
        run(lambda pipe: presence.refresh_leases(pipe, [("ws_bb8_1_aaaa", "bb8")]), redis_client)
        handed.extend(await presence.asweep())
        return len(set(handed)) == 2

    await until(both_handed)

    # r2d2's lease expired, c3po's last frame went stale, each handed out once; bb8 is still fine.
    assert sorted(handed) == ["c3po", "r2d2"]
    assert await presence.asweep() == []
    assert presence.fleet_counts() == {"active_connections": 1, "robots_connected": 1, "robots_reporting": 1}
