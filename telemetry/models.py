from __future__ import annotations

from django.core.validators import RegexValidator
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
