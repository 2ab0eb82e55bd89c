"""The events' OpenAPI types, built from the envelope and EVENT_SCHEMAS so the documentation cannot drift."""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, inline_serializer
from rest_framework import serializers

from fleet.events.envelope import SOURCES
from fleet.events.schema import EVENT_SCHEMAS, METRICS_FIELDS

_META = inline_serializer(
    "EventMeta",
    {
        "correlation_id": serializers.CharField(allow_null=True, help_text="run_id or connection_id."),
        "version": serializers.CharField(),
        "schema_version": serializers.IntegerField(),
        "producer": serializers.CharField(),
        "source_module": serializers.CharField(),
    },
)
_METRICS = inline_serializer("EventMetrics", {name: serializers.FloatField() for name in sorted(METRICS_FIELDS)})
_SCALARS = {str: serializers.CharField, float: serializers.FloatField, int: serializers.IntegerField}


def _field(types: tuple[type, ...]) -> serializers.Field:
    kind = next(t for t in types if t is not type(None))
    if kind is dict:
        return _METRICS
    return _SCALARS[kind](allow_null=type(None) in types)


def _event(event_type: str, fields: dict[str, tuple[type, ...]]) -> serializers.Serializer:
    name = "".join(part.title() for part in event_type.replace(".", "_").split("_"))
    payload = inline_serializer(f"{name}Payload", {field: _field(types) for field, types in fields.items()})
    return inline_serializer(
        f"{name}Event",
        {
            "stream_id": serializers.CharField(help_text="Its ID in the Redis stream; page with `before`."),
            "id": serializers.CharField(),
            "type": serializers.ChoiceField([event_type]),
            "source": serializers.ChoiceField(sorted(SOURCES.values())),
            "target": serializers.CharField(allow_null=True),
            "timestamp": serializers.FloatField(help_text="Unix seconds."),
            "payload": payload,
            "meta": _META,
        },
    )


EVENT_PAGE = inline_serializer(
    "EventPage",
    {
        "next": serializers.URLField(allow_null=True),
        "results": PolymorphicProxySerializer(
            component_name="Event",
            serializers=[_event(event_type, fields) for event_type, fields in EVENT_SCHEMAS.items()],
            resource_type_field_name="type",
            many=True,
        ),
    },
)
