from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from fleet.events.openapi import EVENT_PAGE
from fleet.events.reading import STREAM_ID, recent_events
from fleet.openapi import error
from fleet.redis import STREAMS, get_client


class EventQuerySerializer(serializers.Serializer):
    type = serializers.CharField(required=False, default="", max_length=100)
    limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=1000)
    before = serializers.RegexField(
        STREAM_ID, required=False, error_messages={"invalid": "before must be a stream ID such as 1703003456789-0"}
    )


class EventListView(APIView):
    """Recent lifecycle events, newest first, each with its stream ID. Page with `next`. Staff only."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[EventQuerySerializer],
        responses={200: EVENT_PAGE, 400: error("`invalid_query`: the detail names the parameter.")},
    )
    def get(self, request: Request) -> Response:
        query = EventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        events, cursor = recent_events(get_client(STREAMS), params["type"], params.get("before"), params["limit"])
        next_url = None
        if cursor is not None and len(events) == params["limit"]:
            next_params = request.query_params.copy()
            next_params["before"] = cursor
            next_url = f"{reverse('event-list', request=request)}?{next_params.urlencode()}"
        return Response({"next": next_url, "results": events})
