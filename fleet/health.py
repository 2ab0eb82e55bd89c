"""GET /healthz: can this process reach its database and Redis right now?"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from fleet.redis import get_client


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"error: {exc}".strip()
    return "ok"


def _check_redis() -> str:
    try:
        get_client().ping()
    except Exception as exc:
        return f"error: {exc}".strip()
    return "ok"


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    parts = {"database": _check_database(), "redis": _check_redis()}
    healthy = all(value == "ok" for value in parts.values())
    return JsonResponse({"status": "ok" if healthy else "error", **parts}, status=200 if healthy else 503)
