"""Everything under tests/production runs the deployment of deploy/: real nginx, two daphnes, a qcluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.redis import get_client, reset_clients
from tests.production.stack import Stack, install_nginx

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.production)
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def redis_client():
    """The run's Redis, not emptied between these tests: the stack's processes live across them."""
    reset_clients()
    yield get_client()


@pytest.fixture
def robots() -> dict[str, str]:
    """Six robots and their tokens."""
    from tests.reliability.fleet import make_robots

    return make_robots(6, prefix="prod")


@pytest.fixture
def operator_token(operator) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=operator).key


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory) -> Stack:
    """Started once for the module: the tests' rows come and go (transactional tests) under it."""
    reason = install_nginx()
    if reason:
        pytest.skip(reason)
    stack = Stack(tmp_path_factory.mktemp("production"))
    try:
        yield stack.start()
    finally:
        stack.stop()
