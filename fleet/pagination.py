"""The API's pagination: DRF's limit/offset with a ceiling on `limit`."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination


class FleetPagination(LimitOffsetPagination):
    # Without a ceiling a client-chosen limit reaches the database as is: past 2^63 it is a 500, and
    # anything large turns one request into a full table read.
    max_limit = 1000
