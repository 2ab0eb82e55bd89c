"""Shapes of the telemetry REST API. Live state (connected, reporting) comes from presence, not the database."""

from __future__ import annotations

from rest_framework import serializers

from telemetry.frames import METRICS
from telemetry.models import Robot, TelemetrySample


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
    cpu_usage = serializers.FloatField()
    memory_usage = serializers.FloatField()
    network_latency_ms = serializers.FloatField()
    battery_percentage = serializers.FloatField()
    reported_at = serializers.FloatField(help_text="When the frame was taken, Unix seconds.")
    connected = serializers.BooleanField()
    reporting = serializers.BooleanField()


class TelemetrySampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = TelemetrySample
        fields = ["reported_at", "seq", *METRICS]
