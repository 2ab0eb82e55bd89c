from django.db import migrations

# Disabled: an operator turns them on (and tunes them) in admin or through the API.
EXAMPLES = [
    {"name": "battery_low", "metric": "battery_percentage", "op": "lt", "threshold": 20.0, "for_seconds": 60.0},
    {"name": "cpu_high", "metric": "cpu_usage", "op": "gt", "threshold": 90.0, "for_seconds": 120.0},
    {"name": "not_reporting", "metric": "reporting", "op": "is_false", "threshold": 0.0, "for_seconds": 120.0},
]


def create_examples(apps, schema_editor):
    AlertRule = apps.get_model("telemetry", "AlertRule")
    for fields in EXAMPLES:
        AlertRule.objects.get_or_create(name=fields["name"], defaults={**fields, "enabled": False})


def remove_examples(apps, schema_editor):
    apps.get_model("telemetry", "AlertRule").objects.filter(name__in=[e["name"] for e in EXAMPLES]).delete()


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0004_alerts_and_rollups")]

    operations = [migrations.RunPython(create_examples, remove_examples)]
