from __future__ import annotations

from rest_framework import serializers

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
