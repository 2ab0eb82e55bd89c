"""The alert API: rules (staff write, signed-in users read) and the alerts they raised."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, generics, viewsets
from rest_framework.permissions import SAFE_METHODS, BasePermission

from fleet.api import INVALID_QUERY
from fleet.openapi import error
from telemetry.models import Alert, AlertRule
from telemetry.serializers import AlertRuleSerializer, AlertSerializer


class StaffWritesSignedInReads(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or user.is_staff


INVALID = error("`invalid_query`: the fields that are wrong, each with why.")
NOT_FOUND = error("`not_found`: no rule with this name.")


@extend_schema_view(
    create=extend_schema(responses={201: AlertRuleSerializer, 400: INVALID}),
    retrieve=extend_schema(responses={200: AlertRuleSerializer, 404: NOT_FOUND}),
    update=extend_schema(responses={200: AlertRuleSerializer, 400: INVALID, 404: NOT_FOUND}),
    partial_update=extend_schema(responses={200: AlertRuleSerializer, 400: INVALID, 404: NOT_FOUND}),
    destroy=extend_schema(responses={204: None, 404: NOT_FOUND}),
)
class AlertRuleViewSet(viewsets.ModelViewSet):
    """Alert rules. Disabling or deleting a rule clears its active alerts."""

    queryset = AlertRule.objects.order_by("name")
    serializer_class = AlertRuleSerializer
    lookup_field = "name"
    # Any name reaches the view, so a name that is no slug gets the API's JSON 404, not Django's page.
    lookup_value_regex = "[^/]+"
    permission_classes = [StaffWritesSignedInReads]


@extend_schema_view(
    get=extend_schema(
        summary="Alerts, newest first",
        parameters=[
            OpenApiParameter("active", OpenApiTypes.BOOL, description="true: only active; false: only cleared."),
            OpenApiParameter("robot_id", OpenApiTypes.STR, description="Only this robot's alerts."),
            OpenApiParameter("rule", OpenApiTypes.STR, description="Only this rule's alerts (its name)."),
        ],
        responses={200: AlertSerializer(many=True), 400: error("`invalid_query`: bad `active`")},
    )
)
class AlertListView(generics.ListAPIView):
    serializer_class = AlertSerializer

    def get_queryset(self):
        alerts = Alert.objects.select_related("rule", "robot").order_by("-raised_at", "-id")
        params = self.request.query_params
        active = params.get("active")
        if active is not None:
            if active.lower() not in ("true", "false", "1", "0"):
                raise exceptions.ValidationError(f"active must be true or false; got {active!r}.", code=INVALID_QUERY)
            alerts = alerts.filter(cleared_at__isnull=active.lower() in ("true", "1"))
        if params.get("robot_id"):
            alerts = alerts.filter(robot__robot_id=params["robot_id"])
        if params.get("rule"):
            alerts = alerts.filter(rule__name=params["rule"])
        return alerts
