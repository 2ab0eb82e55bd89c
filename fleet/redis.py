"""The one place that builds Redis clients. Nothing else reads REDIS_URL or FLEET_STREAMS_REDIS_URL.

Clients are for the MAIN Redis (presence, latest values, gates, Django-Q2) unless asked for STREAMS:
the event stream and the mission stream, which FLEET_STREAMS_REDIS_URL may put on a server of their own.
"""

from __future__ import annotations

import asyncio
import weakref
from functools import cache

import redis
import redis.asyncio
from django.conf import settings

MAIN = "main"
STREAMS = "streams"


def url(role: str = MAIN) -> str:
    if role == STREAMS and settings.FLEET_STREAMS_REDIS_URL:
        return settings.FLEET_STREAMS_REDIS_URL
    return settings.REDIS_URL


def _options() -> dict:
    return {
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "health_check_interval": 30,
        # No CLIENT SETINFO on connect: redis-py 8 otherwise looks its own version up in the package
        # metadata (about 1 ms) and sends it on every new connection, which a reconnect storm pays
        # hundreds of times a second.
        "driver_info": None,
    }


@cache
def get_client(role: str = MAIN) -> redis.Redis:
    """A process-wide client with short timeouts, for request and job code."""
    return redis.Redis.from_url(url(role), max_connections=settings.REDIS_MAX_CONNECTIONS, **_options())


def new_client(role: str = MAIN, **overrides) -> redis.Redis:
    """A private client, e.g. for a background thread or a blocking read (socket_timeout=None)."""
    return redis.Redis.from_url(url(role), **{**_options(), **overrides})


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def get_async_client() -> redis.asyncio.Redis:
    """An asyncio client bound to the running event loop (connections can't cross loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, max_connections=settings.REDIS_MAX_CONNECTIONS, **_options()
        )
        _async_clients[loop] = client
    return client


def new_async_client(**overrides) -> redis.asyncio.Redis:
    """A private asyncio client, e.g. for a Pub/Sub subscription that waits without a socket timeout."""
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, **{**_options(), **overrides})


def reset_clients() -> None:
    """Forget cached clients (after a fork, or when tests point REDIS_URL elsewhere)."""
    get_client.cache_clear()
    _async_clients.clear()
