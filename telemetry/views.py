"""The telemetry REST API (fleet info public, the rest behind a token) and the dashboard page."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.fields import DateTimeField
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

import fleet
from fleet.api import INVALID_QUERY, since_until, since_until_bounds
from fleet.openapi import SINCE_UNTIL, error
from telemetry import buckets, latest, presence, publishing
from telemetry.frames import METRICS
from telemetry.models import Robot, TelemetrySample
from telemetry.robots import is_valid_robot_id
from telemetry.serializers import (
    BucketedHistorySerializer,
    InfoSerializer,
    PaginatedSamplesSerializer,
    RobotMetricsSerializer,
    RobotSerializer,
    TelemetrySampleSerializer,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = "Fleet Telemetry System"
FEATURES = [
    "robot_websocket",
    "token_auth",
    "telemetry_backfill",
    "fleet_presence",
    "latest_metrics",
    "telemetry_history",
    "lifecycle_events",
    "mission_metrics",
    "prometheus",
]


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Live telemetry is unavailable: Redis did not answer."
    default_code = "redis_unavailable"


def _robot_or_404(robot_id: str) -> Robot:
    robot = Robot.objects.filter(robot_id=robot_id).first() if is_valid_robot_id(robot_id) else None
    if robot is None:
        raise exceptions.NotFound(f"No robot with robot_id {robot_id!r}.", code="robot_not_found")
    return robot


class InfoView(APIView):
    """The service, its features, and fleet-wide live counts."""

    permission_classes = [AllowAny]
    throttle_classes = [AnonRateThrottle]

    @extend_schema(
        summary="Service info and fleet-wide live counts",
        description=(
            "Public. When Redis does not answer (its clients time out after 0.5 s), the answer is still 200, "
            'with the three counts null, `"degraded": true` and a `detail`.'
        ),
        responses=InfoSerializer,
    )
    def get(self, request: Request) -> Response:
        body = {"name": SERVICE_NAME, "version": fleet.__version__, "features": FEATURES}
        try:
            counts = presence.fleet_counts()
        except redis.RedisError as exc:
            # The static part is still true; health checks belong to /healthz, so don't fail here.
            logger.warning("fleet counts unavailable: %s", exc)
            return Response(
                {
                    **body,
                    "active_connections": None,
                    "robots_connected": None,
                    "robots_reporting": None,
                    "degraded": True,
                    "detail": "Live counts are unavailable: Redis did not answer.",
                }
            )
        return Response(
            {
                **body,
                "active_connections": counts["active_connections"],
                "robots_connected": counts["robots_connected"],
                "robots_reporting": counts["robots_reporting"],
            }
        )


class RobotListView(generics.ListAPIView):
    """Robots with their live state."""

    queryset = Robot.objects.all()
    serializer_class = RobotSerializer

    @extend_schema(summary="List robots with connected, reporting and last_seen_at")
    def get(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        states = presence.robot_states_or_none([robot.robot_id for robot in page])
        serializer = self.get_serializer(page, many=True, context={**self.get_serializer_context(), "states": states})
        return self.get_paginated_response(serializer.data)


class RobotDetailView(APIView):
    """One robot with its live state."""

    @extend_schema(
        summary="One robot with its live state",
        responses={200: RobotSerializer, 404: error("`robot_not_found`")},
    )
    def get(self, request: Request, robot_id: str) -> Response:
        robot = _robot_or_404(robot_id)
        states = presence.robot_states_or_none([robot.robot_id])
        return Response(RobotSerializer(robot, context={"request": request, "states": states}).data)


class RobotMetricsView(APIView):
    """The robot's latest accepted metrics, from Redis."""

    @extend_schema(
        summary="The robot's latest accepted metrics",
        description=(
            "Built from the robot's latest accepted frame. A successful read also sends the `metrics_published` "
            "event when TELEMETRY_PUBLISH_ON_READ is on, at most once per robot per TELEMETRY_PUBLISH_MIN_INTERVAL."
        ),
        responses={
            200: RobotMetricsSerializer,
            404: error("`robot_not_found`, or `no_telemetry` yet"),
            503: error("`redis_unavailable`"),
        },
    )
    def get(self, request: Request, robot_id: str) -> Response:
        robot = _robot_or_404(robot_id)
        try:
            values = latest.latest_metrics(robot.robot_id)
            state = presence.robot_states([robot.robot_id]).get(robot.robot_id) if values else None
        except redis.RedisError as exc:
            logger.warning("latest metrics of %s unavailable: %s", robot.robot_id, exc)
            raise ServiceUnavailable()
        if values is None:
            raise exceptions.NotFound(f"Robot {robot.robot_id!r} has not reported telemetry yet.", code="no_telemetry")
        state = state or {"connected": False, "reporting": False}
        metrics = {name: values[name] for name in METRICS}
        if settings.TELEMETRY_PUBLISH_ON_READ:
            publishing.publish_on_read(RobotMetricsView, robot.robot_id, metrics)
        return Response(
            {
                "robot_id": robot.robot_id,
                **metrics,
                "reported_at": values["reported_at"],
                "connected": bool(state["connected"]),
                "reporting": bool(state["reporting"]),
            }
        )


class TooManyBuckets(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "too_many_buckets"


def _iso(moment: datetime) -> str:
    """As DRF renders a UTC datetime."""
    return DateTimeField().to_representation(moment)


def _bucket_size(raw: str) -> int:
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= buckets.MAX_BUCKET_SECONDS:
        message = f"bucket must be a whole number of seconds from 1 to {buckets.MAX_BUCKET_SECONDS}; got {raw!r}."
        raise exceptions.ValidationError(message, code=INVALID_QUERY)
    return size


class RobotHistoryView(generics.ListAPIView):
    """The robot's stored samples, newest first; `since` (inclusive), `until` (exclusive): ISO 8601 or Unix s.

    With `bucket=<seconds>`, per-bucket count and min/avg/max of each metric instead (telemetry.buckets).
    """

    serializer_class = TelemetrySampleSerializer

    @extend_schema(
        summary="The robot's stored telemetry samples, newest first, or their per-bucket summaries",
        description=(
            "Without `bucket`: paginated samples, newest first. With `bucket=<seconds>`: one entry per non-empty "
            f"bucket, oldest first, at most {buckets.MAX_BUCKETS} buckets per request (`since` then defaults to a "
            "day, or fewer buckets' worth, before `until`); the answer is then a `BucketedHistory`."
        ),
        parameters=[
            *SINCE_UNTIL,
            OpenApiParameter(
                "bucket",
                OpenApiTypes.INT,
                description=f"Bucket size in seconds: summaries instead of samples (at most {buckets.MAX_BUCKETS}).",
            ),
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="HistoryAnswer",
                serializers=[PaginatedSamplesSerializer, BucketedHistorySerializer],
                resource_type_field_name=None,
                many=False,
            ),
            400: error("`invalid_query`: bad since/until/bucket; `too_many_buckets`: over the limit"),
            404: error("`robot_not_found`"),
        },
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        raw_bucket = request.query_params.get("bucket")
        if raw_bucket is None or raw_bucket == "":
            return super().get(request, *args, **kwargs)
        size = _bucket_size(raw_bucket)
        robot = _robot_or_404(self.kwargs["robot_id"])
        since, until = since_until_bounds(request.query_params)
        until = until or datetime.now(tz=UTC)
        since = since or buckets.default_since(until, size)
        if since >= until:
            raise exceptions.ValidationError("since must be earlier than until.", code=INVALID_QUERY)
        count = buckets.bucket_count(since, until, size)
        if count > buckets.MAX_BUCKETS:
            raise TooManyBuckets(
                f"bucket={size} over this range makes {count} buckets; at most {buckets.MAX_BUCKETS} are allowed "
                "per request: use a larger bucket or a shorter range."
            )
        # Built by hand, not by BucketedHistorySerializer (which documents it): 2,000 nested serializers
        # would cost more than the query.
        results = [{**bucket, "start": _iso(bucket["start"])} for bucket in buckets.buckets(robot, since, until, size)]
        return Response({"bucket": size, "since": _iso(since), "until": _iso(until), "results": results})

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular inspecting the view
            return TelemetrySample.objects.none()
        robot = _robot_or_404(self.kwargs["robot_id"])
        return since_until(TelemetrySample.objects.filter(robot=robot), "reported_at", self.request.query_params)


@staff_member_required
def dashboard_page(request: HttpRequest) -> HttpResponse:
    return render(request, "telemetry/dashboard.html", {"metrics": list(METRICS)})
