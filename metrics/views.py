"""`/metrics`: the Prometheus text exposition, optionally behind a bearer token."""

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
        return True
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # Constant-time, so response timing doesn't reveal how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        # The API's error body, so a misconfigured scraper's log says what to send.
        detail = "Send Authorization: Bearer <METRICS_BEARER_TOKEN>."
        response = JsonResponse({"detail": detail, "code": "not_authenticated"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
