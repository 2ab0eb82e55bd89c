"""The per-process credential cache: handshakes without a database round trip, invalidated fleet-wide."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from telemetry.credentials import CredentialCache
from telemetry.robots import create_robot
from tests.servers import BASE_DIR, child_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def cache():
    """A fresh cache on this test's loop, subscribed to invalidations."""
    cache = CredentialCache()
    cache.ensure_subscribed()
    await asyncio.wait_for(cache.subscribed.wait(), 5)
    yield cache
    await cache.close()


@pytest.fixture
async def robot():
    """Robot r2d2 with its token."""
    robot, token = await database_sync_to_async(create_robot)("r2d2")
    robot.token = token
    return robot


def in_another_process(code: str) -> None:
    """Run Django code in a separate Python process, as an admin action or a deploy script would."""
    script = f"import django; django.setup()\n{code}"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=child_env(DJANGO_SETTINGS_MODULE="fleet.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


async def eventually(predicate, within: float = 5.0) -> bool:
    """Poll `predicate` until it holds or `within` seconds pass; whether it held."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def forgotten(cache: CredentialCache, robot_id: str) -> bool:
    return await eventually(lambda: robot_id not in cache.known)


async def test_a_cached_robot_authenticates_without_another_query(cache, robot):
    first = await cache.authenticate("r2d2", robot.token)
    again = await cache.authenticate("r2d2", robot.token)
    wrong = await cache.authenticate("r2d2", "not-the-token")

    assert first == again
    assert first.pk == robot.pk
    assert wrong is None
    assert cache.loads == 1


async def test_concurrent_misses_share_one_query(cache):
    await database_sync_to_async(create_robot)("bb8")

    results = await asyncio.gather(*(cache.lookup(robot_id) for robot_id in ["bb8", "bb8", "c3po", "r5d4"]))

    assert [result is not None for result in results] == [True, True, False, False]
    assert cache.loads == 1


@override_settings(TELEMETRY_AUTH_UNKNOWN_SIZE=3)
async def test_unknown_robot_ids_never_hold_more_than_the_bound(cache):
    for n in range(10):
        assert await cache.lookup(f"ghost-{n}") is None

    assert list(cache.unknown) == ["ghost-7", "ghost-8", "ghost-9"]
    assert cache.known == {}


async def test_rotation_in_another_process_reaches_this_cache_at_once(cache, robot):
    changed: list = []
    cache.listeners.append(changed.append)
    assert await cache.authenticate("r2d2", robot.token) is not None

    in_another_process("from telemetry.robots import create_robot; create_robot('r2d2', rotate=True)")

    assert await forgotten(cache, "r2d2")
    assert changed == [{"r2d2"}]
    assert await cache.authenticate("r2d2", robot.token) is None
    assert await cache.still_valid("r2d2", robot.token_hash) == "token_rotated"


async def test_revocation_in_another_process_reaches_this_cache_at_once(cache, robot):
    assert await cache.authenticate("r2d2", robot.token) is not None

    in_another_process("from telemetry.robots import revoke_robots; revoke_robots(['r2d2'])")

    assert await forgotten(cache, "r2d2")
    assert await cache.authenticate("r2d2", robot.token) is None
    assert await cache.still_valid("r2d2", robot.token_hash) == "revoked"


async def test_bulk_provisioning_forgets_ids_that_were_unknown(cache):
    assert await cache.lookup("bb8") is None

    in_another_process("from telemetry.robots import create_robots; create_robots(['bb8', 'c3po'])")

    assert await eventually(lambda: "bb8" not in cache.unknown)
    assert await cache.lookup("bb8") is not None
