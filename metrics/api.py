"""DRF endpoints: counters and their snapshot history (token or session, paginated, browsable)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.api import since_until
from fleet.openapi import SINCE_UNTIL, error
from metrics.models import Counter, CounterSnapshot
from metrics.serializers import CounterSerializer, CounterSnapshotSerializer

NAME = OpenApiParameter("name", OpenApiTypes.STR, description="Only counters with this exact name.")
NOT_FOUND = error("`counter_not_found`")


@extend_schema_view(
    list=extend_schema(parameters=[NAME]),
    retrieve=extend_schema(responses={200: CounterSerializer, 404: NOT_FOUND}),
)
class CounterViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = CounterSerializer
    # Any id reaches the view, so a malformed one gets the API's JSON 404, not Django's HTML one.
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        counters = Counter.objects.order_by("name", "id")
        name = self.request.query_params.get("name")
        return counters.filter(name=name) if name else counters

    def get_object(self) -> Counter:
        pk = self.kwargs["pk"]
        counter = self.get_queryset().filter(pk=pk).first() if str(pk).isdigit() else None
        if counter is None:
            raise exceptions.NotFound(f"No counter with id {pk!r}.", code="counter_not_found")
        self.check_object_permissions(self.request, counter)
        return counter

    @extend_schema(
        parameters=SINCE_UNTIL,
        responses={
            200: CounterSnapshotSerializer(many=True),
            400: error("`invalid_query`: since or until is neither an ISO 8601 datetime nor Unix seconds."),
            404: NOT_FOUND,
        },
    )
    @action(detail=True, methods=["get"], serializer_class=CounterSnapshotSerializer)
    def history(self, request: Request, pk: str | None = None) -> Response:
        """A counter's snapshots, newest first; `since` inclusive, `until` exclusive."""
        counter = self.get_object()
        snapshots = since_until(CounterSnapshot.objects.filter(counter=counter), "taken_at", request.query_params)
        page = self.paginate_queryset(snapshots)
        return self.get_paginated_response(CounterSnapshotSerializer(page, many=True).data)
