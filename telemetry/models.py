from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

ROBOT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class Robot(models.Model):
    robot_id = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(ROBOT_ID_PATTERN, "Use 1-64 letters, digits, '_', '.' or '-'.")],
    )
    name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    # SHA-256 of the token: tokens are 32 random bytes, so a fast hash is enough and the
    # plain token is never stored.
    token_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["robot_id"]

    def __str__(self) -> str:
        return self.robot_id


class RobotSession(models.Model):
    """One WebSocket connection of a robot: the audit trail."""

    connection_id = models.CharField(max_length=120, unique=True)
    robot = models.ForeignKey(Robot, on_delete=models.CASCADE, related_name="sessions")
    connected_at = models.DateTimeField()
    disconnected_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=32, blank=True)
    close_code = models.IntegerField(null=True, blank=True)
    frames_accepted = models.PositiveIntegerField(default=0)
    frames_rejected = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-connected_at"]
        indexes = [models.Index(fields=["robot", "-connected_at"])]

    def __str__(self) -> str:
        return self.connection_id


class TelemetrySample(models.Model):
    """Downsampled history of accepted frames (all frames of a backfill batch are kept)."""

    robot = models.ForeignKey(Robot, on_delete=models.CASCADE, related_name="samples")
    reported_at = models.DateTimeField()
    seq = models.BigIntegerField(null=True, blank=True)
    cpu_usage = models.FloatField()
    memory_usage = models.FloatField()
    network_latency_ms = models.FloatField()
    battery_percentage = models.FloatField()

    class Meta:
        ordering = ["-reported_at"]
        # One sample per robot and instant makes a resent backfill batch idempotent. Its index also
        # serves the newest-first reads of one robot (a B-tree is read either way).
        constraints = [models.UniqueConstraint(fields=["robot", "reported_at"], name="one_sample_per_robot_instant")]
        indexes = [models.Index(fields=["reported_at"])]

    def __str__(self) -> str:
        return f"{self.robot} @ {self.reported_at:%Y-%m-%d %H:%M:%S}"


METRIC_CHOICES = [
    ("battery_percentage", "battery_percentage"),
    ("cpu_usage", "cpu_usage"),
    ("memory_usage", "memory_usage"),
    ("network_latency_ms", "network_latency_ms"),
    ("reporting", "reporting"),
]
OP_CHOICES = [("lt", "<"), ("le", "≤"), ("gt", ">"), ("ge", "≥"), ("is_false", "is false")]


class TelemetryRollup(models.Model):
    """Five minutes of one robot's samples, summarised (telemetry.rollups): long ranges read 1/30 of the rows."""

    robot = models.ForeignKey(Robot, on_delete=models.CASCADE, related_name="rollups")
    start = models.DateTimeField()
    count = models.PositiveIntegerField()
    cpu_usage_min = models.FloatField()
    cpu_usage_max = models.FloatField()
    cpu_usage_sum = models.FloatField()
    memory_usage_min = models.FloatField()
    memory_usage_max = models.FloatField()
    memory_usage_sum = models.FloatField()
    network_latency_ms_min = models.FloatField()
    network_latency_ms_max = models.FloatField()
    network_latency_ms_sum = models.FloatField()
    battery_percentage_min = models.FloatField()
    battery_percentage_max = models.FloatField()
    battery_percentage_sum = models.FloatField()

    class Meta:
        ordering = ["robot", "start"]
        constraints = [models.UniqueConstraint(fields=["robot", "start"], name="telemetry_rollup_robot_start")]
        indexes = [models.Index(fields=["start"], name="telemetry_rollup_start")]  # retention prunes by age

    def __str__(self) -> str:
        return f"{self.robot} @ {self.start:%Y-%m-%d %H:%M}"


class AlertRule(models.Model):
    """A threshold on one metric (or on `reporting`) that must hold for `for_seconds` to raise an alert."""

    name = models.SlugField(max_length=64, unique=True)
    metric = models.CharField(max_length=32, choices=METRIC_CHOICES)
    op = models.CharField(max_length=8, choices=OP_CHOICES)
    threshold = models.FloatField(default=0.0, help_text="Ignored by `is_false`.")
    for_seconds = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    clear_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Hysteresis: once raised, an alert clears only past this value (lt 20, clear 25).",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = rule_errors(self.metric, self.op, self.threshold, self.clear_threshold)
        if errors:
            raise ValidationError(errors)


def rule_errors(metric: str, op: str, threshold: float, clear_threshold: float | None) -> dict[str, str]:
    """Why a rule's fields don't fit together; empty when they do (shared by the admin form and the API)."""
    if (metric == "reporting") != (op == "is_false"):
        return {"op": "`reporting` takes `is_false`, and `is_false` only applies to `reporting`."}
    if clear_threshold is None or op == "is_false":
        return {}
    # The clear level must lie on the healthy side of the threshold, or the alert could never clear.
    if op in ("lt", "le") and clear_threshold < threshold:
        return {"clear_threshold": f"must be at least the threshold ({threshold}) for `{op}`."}
    if op in ("gt", "ge") and clear_threshold > threshold:
        return {"clear_threshold": f"must be at most the threshold ({threshold}) for `{op}`."}
    return {}


class Alert(models.Model):
    """One raise of a rule for a robot, and its clear. At most one is active per rule and robot."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    robot = models.ForeignKey(Robot, on_delete=models.CASCADE, related_name="alerts")
    raised_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(help_text="The value when the alert was raised.")
    peak = models.FloatField(help_text="The worst value while the alert was pending or active (kept at clear).")

    class Meta:
        ordering = ["-raised_at", "-id"]
        indexes = [models.Index(fields=["robot", "-raised_at"]), models.Index(fields=["-raised_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "robot"], condition=models.Q(cleared_at__isnull=True), name="telemetry_one_active_alert"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule} on {self.robot} @ {self.raised_at:%Y-%m-%d %H:%M:%S}"
