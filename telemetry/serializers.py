"""Shapes of the telemetry REST API. Live state (connected, reporting) comes from presence, not the database."""

from __future__ import annotations

from collections.abc import Callable

from rest_framework import serializers

from telemetry.frames import METRICS
from telemetry.models import Alert, AlertRule, Robot, TelemetrySample, rule_errors


def per_metric(make: Callable[[], serializers.Field]) -> dict[str, serializers.Field]:
    """One fresh field per metric, in METRICS order: a new metric reaches the API without an edit here."""
    return {name: make() for name in METRICS}


class InfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    features = serializers.ListField(child=serializers.CharField())
    active_connections = serializers.IntegerField(allow_null=True, help_text="Live connection leases fleet-wide.")
    robots_connected = serializers.IntegerField(allow_null=True)
    robots_reporting = serializers.IntegerField(allow_null=True)
    degraded = serializers.BooleanField(
        required=False, help_text="Present (true) only when Redis did not answer; the three counts are then null."
    )
    detail = serializers.CharField(required=False, help_text="Why the response is degraded.")


class RobotSerializer(serializers.ModelSerializer):
    """A robot with its live state. The view puts `{robot_id: {"connected", "reporting"}}` in context["states"]."""

    connected = serializers.SerializerMethodField(help_text="Holds a live connection lease (null: Redis unavailable).")
    reporting = serializers.SerializerMethodField(
        help_text="Its last accepted frame is newer than TELEMETRY_STALE_AFTER (null: Redis unavailable)."
    )

    class Meta:
        model = Robot
        fields = ["robot_id", "name", "is_active", "connected", "reporting", "last_seen_at", "created_at"]

    def _state(self, robot: Robot) -> dict | None:
        states = self.context.get("states")
        if states is None:
            return None
        return states.get(robot.robot_id, {"connected": False, "reporting": False})

    def get_connected(self, robot: Robot) -> bool | None:
        state = self._state(robot)
        return None if state is None else bool(state["connected"])

    def get_reporting(self, robot: Robot) -> bool | None:
        state = self._state(robot)
        return None if state is None else bool(state["reporting"])


class RobotMetricsSerializer(serializers.Serializer):
    robot_id = serializers.CharField()
    reported_at = serializers.FloatField(help_text="When the frame was taken, Unix seconds.")
    connected = serializers.BooleanField()
    reporting = serializers.BooleanField()

    def get_fields(self) -> dict[str, serializers.Field]:
        # The metrics go right after robot_id, where the view puts them in the response.
        fields = super().get_fields()
        return {"robot_id": fields.pop("robot_id"), **per_metric(serializers.FloatField), **fields}


class TelemetrySampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = TelemetrySample
        fields = ["reported_at", "seq", *METRICS]


class AlertRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertRule
        fields = ["id", "name", "metric", "op", "threshold", "for_seconds", "clear_threshold", "enabled"]

    def validate(self, attrs: dict) -> dict:
        merged = {field: getattr(self.instance, field, None) for field in ("metric", "op", "threshold")}
        merged["clear_threshold"] = getattr(self.instance, "clear_threshold", None)
        merged.update(attrs)
        errors = rule_errors(merged["metric"], merged["op"], merged["threshold"] or 0.0, merged["clear_threshold"])
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class AlertSerializer(serializers.ModelSerializer):
    rule = serializers.SlugRelatedField(slug_field="name", read_only=True)
    robot_id = serializers.CharField(source="robot.robot_id", read_only=True)
    metric = serializers.CharField(source="rule.metric", read_only=True)
    threshold = serializers.FloatField(source="rule.threshold", read_only=True)
    active = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = ["id", "rule", "robot_id", "metric", "threshold", "active", "raised_at", "cleared_at", "value", "peak"]

    def get_active(self, alert: Alert) -> bool:
        return alert.cleared_at is None


class MinAvgMaxSerializer(serializers.Serializer):
    min = serializers.FloatField()
    avg = serializers.FloatField()
    max = serializers.FloatField()


class BucketSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="The bucket's start; buckets are aligned to multiples of their size.")
    count = serializers.IntegerField(help_text="Samples in the bucket (empty buckets are left out).")

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**super().get_fields(), **per_metric(MinAvgMaxSerializer)}


class BucketedHistorySerializer(serializers.Serializer):
    bucket = serializers.IntegerField(help_text="Bucket size in seconds.")
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    results = BucketSerializer(many=True, help_text="Oldest first.")


class PaginatedSamplesSerializer(serializers.Serializer):
    """The history without `bucket` (for the schema: the view answers with its paginator)."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TelemetrySampleSerializer(many=True)
