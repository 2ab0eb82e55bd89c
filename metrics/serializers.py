from __future__ import annotations

from datetime import datetime

from rest_framework import serializers

from fleet.instants import parse_instant
from metrics.models import Counter, CounterSnapshot


class CounterSerializer(serializers.ModelSerializer):
    labels = serializers.DictField(child=serializers.CharField(), read_only=True)
    history = serializers.HyperlinkedIdentityField(view_name="metrics-counter-history", read_only=True)

    class Meta:
        model = Counter
        fields = ["id", "name", "labels", "value", "updated_at", "history"]
        read_only_fields = fields


class CounterSnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = CounterSnapshot
        fields = ["value", "taken_at", "gap", "note"]
        read_only_fields = fields


class InstantField(serializers.Field):
    """A point in time given as ISO 8601 (a naive one is UTC) or as Unix seconds."""

    default_error_messages = {
        "invalid": "Give an ISO 8601 date-time (e.g. 2026-01-31T12:00:00Z) or Unix seconds (e.g. 1769860800).",
    }

    def to_internal_value(self, data: object) -> datetime:
        moment = parse_instant(str(data))
        if moment is None:
            self.fail("invalid")
        return moment

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class HistoryQuerySerializer(serializers.Serializer):
    since = InstantField(required=False, help_text="Snapshots taken at or after this time.")
    until = InstantField(required=False, help_text="Snapshots taken at or before this time.")

    def validate(self, attrs: dict) -> dict:
        if "since" in attrs and "until" in attrs and attrs["since"] > attrs["until"]:
            raise serializers.ValidationError({"until": ["until must not be before since."]})
        return attrs
