"""Start a private embedded Redis for the test run when REDIS_URL is unset, and turn debug on.

Loaded with `-p` (see pyproject.toml) because pytest-django reads the settings before any
conftest is imported, and the settings must already see REDIS_URL and DJANGO_DEBUG.
"""

from __future__ import annotations

import os

import pytest

_server = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _server
    # DEBUG is off by default; the suite runs with the debug defaults (generated secret key, open
    # /metrics, ws:// robots) unless DJANGO_DEBUG says otherwise, and tests of the production
    # defaults start processes with DJANGO_DEBUG=0. Child processes inherit it.
    os.environ.setdefault("DJANGO_DEBUG", "1")
    if os.environ.get("REDIS_URL"):
        return
    from fleet.embedded_redis import EmbeddedRedis

    var_dir = os.environ.get("FLEET_VAR_DIR") or os.path.join(os.getcwd(), "var")
    # Its own directory and socket, so `make test` never touches a running `make run`.
    _server = EmbeddedRedis(os.path.join(var_dir, f"test-redis-{os.getpid()}"), persist=False).start()
    os.environ["REDIS_URL"] = _server.url


def pytest_unconfigure(config):
    if _server is not None:
        _server.stop()
        import shutil

        shutil.rmtree(_server.directory, ignore_errors=True)


def embedded_server():
    """The embedded server of this run, or None when REDIS_URL points elsewhere."""
    return _server
