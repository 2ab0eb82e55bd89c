from django.db import migrations


def rollups_from_samples(apps, schema_editor):
    """History written before rollups existed gets its rollups, so bucketed answers cover it."""
    from telemetry.buckets import BucketStart
    from telemetry.rollups import from_samples

    samples = apps.get_model("telemetry", "TelemetrySample").objects.order_by()
    apps.get_model("telemetry", "TelemetryRollup").objects.bulk_create(
        from_samples(samples, BucketStart), batch_size=500
    )


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0005_example_alert_rules")]

    operations = [migrations.RunPython(rollups_from_samples, migrations.RunPython.noop)]
