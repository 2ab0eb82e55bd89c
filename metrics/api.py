"""DRF endpoints: counters and their snapshot history (authenticated, paginated, browsable)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from metrics.models import Counter, CounterSnapshot
from metrics.serializers import CounterSerializer, CounterSnapshotSerializer, HistoryQuerySerializer

NAME = OpenApiParameter("name", OpenApiTypes.STR, description="Only counters with this exact name.")
SINCE = OpenApiParameter("since", OpenApiTypes.STR, description="ISO 8601 date-time or Unix seconds (inclusive).")
UNTIL = OpenApiParameter("until", OpenApiTypes.STR, description="ISO 8601 date-time or Unix seconds (inclusive).")
NOT_FOUND = OpenApiResponse(description="No counter with this id.")


@extend_schema_view(
    list=extend_schema(parameters=[NAME]),
    retrieve=extend_schema(responses={200: CounterSerializer, 404: NOT_FOUND}),
)
class CounterViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = CounterSerializer

    def get_queryset(self):
        counters = Counter.objects.order_by("name", "id")
        name = self.request.query_params.get("name")
        return counters.filter(name=name) if name else counters

    @extend_schema(
        parameters=[SINCE, UNTIL],
        responses={
            200: CounterSnapshotSerializer(many=True),
            400: OpenApiResponse(description="since or until is neither an ISO 8601 date-time nor Unix seconds."),
            404: NOT_FOUND,
        },
    )
    @action(detail=True, methods=["get"], serializer_class=CounterSnapshotSerializer)
    def history(self, request: Request, pk: str | None = None) -> Response:
        """A counter's snapshots, oldest first."""
        counter = self.get_object()
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        snapshots = CounterSnapshot.objects.filter(counter=counter).order_by("taken_at", "id")
        if "since" in query.validated_data:
            snapshots = snapshots.filter(taken_at__gte=query.validated_data["since"])
        if "until" in query.validated_data:
            snapshots = snapshots.filter(taken_at__lte=query.validated_data["until"])
        page = self.paginate_queryset(snapshots)
        return self.get_paginated_response(CounterSnapshotSerializer(page, many=True).data)
