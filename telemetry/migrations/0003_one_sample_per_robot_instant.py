from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0002_drop_duplicate_samples")]

    operations = [
        # The unique constraint's index serves the same reads as this one.
        migrations.RemoveIndex(model_name="telemetrysample", name="telemetry_t_robot_i_a74774_idx"),
        migrations.AddConstraint(
            model_name="telemetrysample",
            constraint=models.UniqueConstraint(fields=("robot", "reported_at"), name="one_sample_per_robot_instant"),
        ),
    ]
