"""The REST convention every app follows: error bodies, pagination, and since/until (fleet.openapi documents it)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from rest_framework import exceptions, serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from fleet.instants import parse_instant

# Every query parameter we take is validated by a query serializer or here; one code names them all.
INVALID_QUERY = "invalid_query"


class Pagination(LimitOffsetPagination):
    # Without a ceiling a client-chosen limit reaches the database as is: past 2^63 it is a 500, and
    # anything large turns one request into a full table read.
    max_limit = 1000


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for people.")
    code = serializers.CharField(help_text="What went wrong, for programs.")


def _messages(data: object, field: str = "") -> list[tuple[str, object]]:
    """Every message of DRF's nested error detail, with the query parameter it is about."""
    if isinstance(data, dict):
        return [
            pair
            for name, value in data.items()
            for pair in _messages(value, field if name in ("detail", "non_field_errors") else name)
        ]
    if isinstance(data, list):
        return [pair for item in data for pair in _messages(item, field)]
    return [(field, data)]


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler (status, WWW-Authenticate, Retry-After), with every body as {"detail", "code"}."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    messages = _messages(response.data)
    if isinstance(exc, exceptions.ValidationError):
        detail = "; ".join(f"{field}: {message}" if field else str(message) for field, message in messages)
        code = INVALID_QUERY
    else:
        detail, code = str(messages[0][1]), getattr(messages[0][1], "code", None) or "error"
    response.data = {"detail": detail, "code": code}
    return response


def since_until_bounds(query_params) -> tuple[datetime | None, datetime | None]:
    """`since` and `until` (either may be None), validated: ISO 8601 (naive is UTC) or Unix seconds, since < until."""
    since = _instant(query_params, "since")
    until = _instant(query_params, "until")
    if since and until and since >= until:
        raise exceptions.ValidationError("since must be earlier than until.", code=INVALID_QUERY)
    return since, until


def since_until(queryset: QuerySet, field: str, query_params) -> QuerySet:
    """Rows with `field` in [since, until), newest first. Both are ISO 8601 (naive is UTC) or Unix seconds."""
    since, until = since_until_bounds(query_params)
    if since:
        queryset = queryset.filter(**{f"{field}__gte": since})
    if until:
        queryset = queryset.filter(**{f"{field}__lt": until})
    return queryset.order_by(f"-{field}", "-id")


def _instant(query_params, name: str):
    raw = query_params.get(name)
    if raw is None or raw == "":
        return None
    value = parse_instant(raw)
    if value is None:
        message = f"{name} must be an ISO 8601 datetime or Unix seconds; got {raw!r}."
        raise exceptions.ValidationError(message, code=INVALID_QUERY)
    return value
