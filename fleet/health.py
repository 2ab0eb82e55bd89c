"""GET /healthz: can this process reach its database and Redis right now (and the streams' Redis, if apart)?

The body says only "ok" or "error" per part: exception text names hosts, ports and users, which a
public health check must not hand out. The details go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from fleet.redis import STREAMS, get_client

logger = logging.getLogger(__name__)


def _ping_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _ping_redis() -> None:
    get_client().ping()


def _ping_streams_redis() -> None:
    get_client(STREAMS).ping()


def checks() -> dict[str, Callable[[], None]]:
    parts = {"database": _ping_database, "redis": _ping_redis}
    if settings.FLEET_STREAMS_REDIS_URL:
        parts["streams_redis"] = _ping_streams_redis
    return parts


def _check(name: str, ping: Callable[[], None]) -> str:
    try:
        ping()
    except Exception as exc:
        logger.warning("health check: %s is failing: %s: %s", name, type(exc).__name__, exc)
        return "error"
    return "ok"


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    parts = {name: _check(name, ping) for name, ping in checks().items()}
    healthy = all(value == "ok" for value in parts.values())
    return JsonResponse({"status": "ok" if healthy else "error", **parts}, status=200 if healthy else 503)
