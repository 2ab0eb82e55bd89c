"""Login attempts per client address: settings.LOGIN_THROTTLE (e.g. "10/minute") POSTs, then 429.

Wraps the admin's and the browsable API's login views. The address is REMOTE_ADDR, which
fleet.proxies has set from a trusted proxy's X-Forwarded-For, so one client behind nginx cannot
pose as many. Counted per process in the default cache, like API_ANON_THROTTLE.
"""

from __future__ import annotations

import functools
import logging
import math

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class LoginThrottle(SimpleRateThrottle):
    scope = "login"

    def get_rate(self) -> str:
        # Read at each request rather than at import (DRF's default), so the setting is the only source.
        return settings.LOGIN_THROTTLE

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def throttle_logins(view):
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            throttle = LoginThrottle()
            if not throttle.allow_request(request, None):
                wait = math.ceil(throttle.wait() or 1)
                logger.warning("login attempts from %s throttled for %d s", request.META.get("REMOTE_ADDR"), wait)
                response = HttpResponse(
                    f"429 Too Many Requests: too many login attempts; try again in {wait} s\n",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(wait)
                return response
        return view(request, *args, **kwargs)

    return wrapped
