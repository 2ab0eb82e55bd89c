"""The one pruning pattern: delete rows older than a retention in small batches, each its own transaction."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Model
from django.utils import timezone

logger = logging.getLogger(__name__)

# Small batches, so ingest's and the aggregation's writes never wait long behind a prune.
PRUNE_BATCH = 5000


def prune_older_than(
    model: type[Model], field: str, days: int, now: datetime | None = None, batch_size: int = PRUNE_BATCH
) -> int:
    """Delete `model` rows whose `field` is before now - `days`. Returns how many were deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=days)
    old = model.objects.filter(**{f"{field}__lt": cutoff}).order_by()
    deleted = 0
    while ids := list(old.values_list("id", flat=True)[:batch_size]):
        deleted += model.objects.filter(id__in=ids).delete()[0]
    logger.info("pruned %d %s rows with %s before %s", deleted, model._meta.label, field, cutoff.isoformat())
    return deleted
