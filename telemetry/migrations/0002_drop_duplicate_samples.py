from __future__ import annotations

from django.db import migrations
from django.db.models import Count, Min


def drop_duplicate_samples(apps, schema_editor):
    """Keep the first sample of each (robot, reported_at), so the unique constraint of 0003 can be added."""
    TelemetrySample = apps.get_model("telemetry", "TelemetrySample")
    duplicated = (
        TelemetrySample.objects.values("robot_id", "reported_at")
        .annotate(count=Count("id"), first=Min("id"))
        .filter(count__gt=1)
    )
    for group in duplicated.iterator():
        TelemetrySample.objects.filter(robot_id=group["robot_id"], reported_at=group["reported_at"]).exclude(
            id=group["first"]
        ).delete()


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0001_initial")]

    operations = [migrations.RunPython(drop_duplicate_samples, migrations.RunPython.noop)]
