"""Fixtures shared by the whole suite: real Redis, real database, real server processes."""

from __future__ import annotations

import pytest
import redis

from fleet.redis import get_client, reset_clients


@pytest.fixture(autouse=True)
def redis_client() -> redis.Redis:
    """The real Redis of this run, emptied before each test (its own database or private server)."""
    reset_clients()
    client = get_client()
    client.flushdb()
    yield client
    reset_clients()
