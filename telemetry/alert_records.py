"""Recording alert transitions: each raise and clear becomes an Alert row and a signal (then an event).

`record` runs in a worker thread of the process that decided the transitions (telemetry.alerting).
Disabling or deleting a rule clears its active alerts the same way (`retire_rule`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import redis
from django.db import IntegrityError, transaction

from fleet.redis import get_client
from telemetry.alerts import AlertEvaluator, Rule, Transition, state_key
from telemetry.models import Alert, AlertRule, Robot
from telemetry.signals import alert_cleared, alert_raised

logger = logging.getLogger(__name__)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def record(transitions: Iterable[Transition]) -> list[Transition]:
    """Write each transition's Alert row and send its signal; the ones recorded (sync: run it in a thread)."""
    transitions = list(transitions)
    robots = dict(Robot.objects.filter(robot_id__in={t.robot_id for t in transitions}).values_list("robot_id", "pk"))
    recorded = []
    for transition in transitions:
        robot_pk = robots.get(transition.robot_id)
        if robot_pk is None:
            continue  # deleted since it reported
        if transition.kind == "raise":
            try:
                with transaction.atomic():
                    Alert.objects.create(
                        rule_id=transition.rule.pk,
                        robot_id=robot_pk,
                        raised_at=_utc(transition.at),
                        value=transition.value,
                        peak=transition.peak,
                    )
            except IntegrityError:
                # Already active: Redis lost the state (a flush or a new server) and it was decided again.
                continue
            signal = alert_raised
        else:
            updated = Alert.objects.filter(rule_id=transition.rule.pk, robot_id=robot_pk, cleared_at=None).update(
                cleared_at=_utc(transition.at), peak=transition.peak
            )
            if not updated:
                continue
            signal = alert_cleared
        signal.send(
            sender=AlertEvaluator,
            rule=transition.rule.name,
            robot_id=transition.robot_id,
            metric=transition.rule.metric,
            value=transition.value,
            threshold=transition.threshold,
            timestamp=transition.at,
        )
        recorded.append(transition)
    for transition in recorded:
        logger.info(
            "alert %s %s: %s=%s (threshold %s)",
            transition.rule.name,
            "raised" if transition.kind == "raise" else "cleared",
            transition.rule.metric,
            transition.value,
            transition.threshold,
            extra={"robot_id": transition.robot_id},
        )
    return recorded


def retire_rule(rule_pk: int, now: float | None = None) -> list[Transition]:
    """Clear a disabled or deleted rule's active alerts and forget its Redis state."""
    now = time.time() if now is None else now
    try:
        get_client().delete(state_key(rule_pk))
    except redis.RedisError as exc:
        logger.warning("could not drop the alert state of rule %s: %s", rule_pk, exc)
    rule = AlertRule.objects.filter(pk=rule_pk).first()
    if rule is None:
        return []
    active = Alert.objects.filter(rule_id=rule_pk, cleared_at=None).select_related("robot")
    return record(
        Transition(Rule.of(rule), alert.robot.robot_id, "clear", alert.peak, alert.peak, now) for alert in active
    )


def rule_saved(sender, instance: AlertRule, created: bool = False, **kwargs) -> None:
    """Receiver of AlertRule's post_save: a disabled rule's alerts are cleared once the change commits."""
    if not instance.enabled and not created:
        rule_pk = instance.pk
        transaction.on_commit(lambda: retire_rule(rule_pk))


def rule_deleting(sender, instance: AlertRule, **kwargs) -> None:
    """Receiver of AlertRule's pre_delete: clear its alerts (dashboards hear of it) before they go with it."""
    retire_rule(instance.pk)
