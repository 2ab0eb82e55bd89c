"""Recording alert transitions: each raise and clear becomes an Alert row and a signal (then an event).

`record` runs in a worker thread of the process that decided the transitions, through its
`Recorder` (telemetry.alerting). Redis has already decided them, so a database that refuses them
(busy, away, mid-migration) must not lose them: the Recorder keeps them, in the order they were
decided, and records them again on the next tick. That is safe because recording is idempotent: an
alert already active is not raised twice, one already cleared is not cleared twice. Disabling or
deleting a rule clears its active alerts the same way (`retire_rule`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import redis
from channels.db import database_sync_to_async
from django.db import DatabaseError, DataError, IntegrityError, transaction

from fleet import fanout
from fleet.redis import get_client
from telemetry.alerts import AlertEvaluator, Rule, Transition, state_key
from telemetry.models import Alert, AlertRule, Robot
from telemetry.signals import alert_cleared, alert_raised

logger = logging.getLogger(__name__)

# Transitions kept while the database refuses them; past it the oldest are dropped, and named in the log.
MAX_UNRECORDED = 10_000


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


class Recorder:
    """One event loop's transitions on their way to the database and the dashboards, one batch at a time."""

    def __init__(self) -> None:
        self.unrecorded: list[Transition] = []
        self._task: asyncio.Task | None = None
        self._waiting = False  # the database refused the last batch

    def add(self, transitions: list[Transition]) -> None:
        self.unrecorded.extend(transitions)
        if len(self.unrecorded) > MAX_UNRECORDED:
            dropped = self.unrecorded[: len(self.unrecorded) - MAX_UNRECORDED]
            del self.unrecorded[: len(dropped)]
            logger.error("dropped unrecorded alert transitions %s", _names(dropped))
        self.retry()

    def retry(self) -> None:
        """Record what is waiting, off the caller's path (a busy database must not hold up the next flush)."""
        if self.unrecorded and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._record())

    async def drain(self) -> None:
        """Wait for the batch being recorded; what the database refused stays for the next retry."""
        while self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    async def _record(self) -> None:
        while self.unrecorded:
            transitions, self.unrecorded = self.unrecorded, []
            try:
                recorded = await database_sync_to_async(record)(transitions)
            except Exception as exc:
                if isinstance(exc, DatabaseError) and not isinstance(exc, (IntegrityError, DataError)):
                    self.unrecorded[:0] = transitions  # first in line, so a clear never overtakes its raise
                    if not self._waiting:  # once per outage, not once a second
                        logger.warning("could not record %d alert transitions (%s); retrying", len(transitions), exc)
                    self._waiting = True
                    return
                # A bad row or a bug would fail the same way again: name what is lost, go on with the rest.
                logger.exception("could not record alert transitions %s", _names(transitions))
                continue
            if self._waiting:
                self._waiting = False
                logger.warning("alert transitions are recorded again")
            if recorded:
                try:
                    await fanout.asend({"type": "fleet.alerts", "alerts": [t.message() for t in recorded]})
                except Exception as exc:  # the rows and events stand; a dashboard's next snapshot has them
                    logger.warning("could not send %d alert transitions to dashboards (%s)", len(recorded), exc)


def _names(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.rule.name, t.robot_id, t.kind) for t in transitions]


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
