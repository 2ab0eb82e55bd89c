"""`/metrics`: the Prometheus text exposition, behind a bearer token unless anonymous scrapes are allowed.

Without METRICS_BEARER_TOKEN, it answers anyone only when METRICS_ALLOW_ANONYMOUS is on (the default
in debug only): the counts, robot IDs and Redis health it shows are not for the public.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from metrics.prometheus import exposition


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_BEARER_TOKEN
    if not token:
        return settings.METRICS_ALLOW_ANONYMOUS
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # Constant-time, so response timing doesn't reveal how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        # The API's error body, so a misconfigured scraper's log says what to send.
        detail = "Send Authorization: Bearer <METRICS_BEARER_TOKEN>."
        if not settings.METRICS_BEARER_TOKEN:
            detail = "Set METRICS_BEARER_TOKEN (or METRICS_ALLOW_ANONYMOUS=1) on the server, then s" + detail[1:]
        response = JsonResponse({"detail": detail, "code": "not_authenticated"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
