"""Fixtures shared by the whole suite: real Redis, real database, real server processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from channels.layers import channel_layers
from django.test import override_settings

from fleet.embedded_redis import EmbeddedRedis
from fleet.events.stream import reset_publisher
from fleet.redis import get_client, reset_clients
from tests.servers import wait_for

# Every frame a test receives from the robot route is checked against the protocol's schemas.
pytest_plugins = ["tests.protocol"]


@pytest.fixture(autouse=True)
def redis_client() -> redis.Redis:
    """The real Redis of this run, emptied before each test (its own database or private server)."""
    reset_clients()
    client = get_client()
    client.flushdb()
    yield client
    reset_clients()
    # Each async test has its own event loop; channels-redis keeps loop-bound locks and pools
    # in its layer object, so every test starts with a fresh one.
    channel_layers.backends.clear()


@pytest.fixture
def operator(django_user_model):
    """A staff user who watches the fleet (admin, dashboard, API)."""
    return django_user_model.objects.create_user("olivia", "olivia@example.com", "correct horse", is_staff=True)


@pytest.fixture
def r2d2():
    """Robot r2d2 and its token, as `create_robot` issues them."""
    from telemetry.robots import create_robot

    robot, token = create_robot("r2d2", name="Astromech")
    robot.token = token
    return robot


def add_to_counter(name: str, labels: dict | None = None, amount: int = 1) -> None:
    """Increment one counter, as the aggregation does with many."""
    from metrics.counters import counter_key, inc_counters

    inc_counters({counter_key(name, labels): amount})


def counter_value(name: str, labels: dict | None = None) -> int:
    """A counter's current value, 0 when it was never incremented."""
    from metrics.counters import canonical_labels
    from metrics.models import Counter

    counter = Counter.objects.filter(name=name, labels=canonical_labels(labels)).first()
    return counter.value if counter else 0


@pytest.fixture
def battery_low():
    """Alert rule battery_low (battery_percentage lt 20 for 60 s), enabled; as migrations create it, but on."""
    from telemetry.models import AlertRule

    rule, _ = AlertRule.objects.update_or_create(
        name="battery_low",
        defaults={"metric": "battery_percentage", "op": "lt", "threshold": 20, "for_seconds": 60, "enabled": True},
    )
    return rule


@contextmanager
def redis_server_as(setting: str, directory: Path, persist: bool = False) -> Iterator[EmbeddedRedis]:
    """A Redis server of the test's own, as `setting` (REDIS_URL, FLEET_STREAMS_REDIS_URL) while it runs."""
    server = EmbeddedRedis(directory, persist=persist).start()
    with override_settings(**{setting: server.url}):
        reset_clients()
        reset_publisher()
        try:
            yield server
        finally:
            reset_publisher()
    reset_clients()
    server.stop()


@pytest.fixture
def sessions_written():
    """After the test, wait briefly for server processes to write their closed sockets' session rows
    (the history writer runs once a second). The database is emptied next, and on PostgreSQL that
    TRUNCATE and a late write can deadlock. Rows a killed server never closes cost the full wait."""
    yield
    from telemetry.models import RobotSession

    wait_for(lambda: not RobotSession.objects.filter(disconnected_at=None).exists(), within=3)
