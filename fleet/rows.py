"""Inserting rows in bulk so that one bad row is logged and skipped instead of sinking all the others."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import DataError, IntegrityError, models, transaction

logger = logging.getLogger(__name__)

# What one row can cause. OperationalError (locked, unreachable) is not here: it is the whole
# database's trouble, and the caller keeps the batch to retry it.
ROW_ERRORS = (IntegrityError, DataError)


def insert_rows(
    model: type[models.Model],
    rows: list[models.Model],
    batch_size: int = 500,
    ignore_conflicts: bool = False,
    insert: Callable[[list[models.Model]], object] | None = None,
) -> list[models.Model]:
    """Insert `rows`, each chunk in one statement; a chunk that fails is retried row by row. Returns the rows skipped.

    Call it inside a transaction: each attempt runs in a savepoint, so a failed one leaves the rest intact.
    """
    insert = insert or (lambda chunk: model.objects.bulk_create(chunk, ignore_conflicts=ignore_conflicts))
    skipped = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        try:
            with transaction.atomic():
                insert(chunk)
            continue
        except ROW_ERRORS:
            pass
        for row in chunk:
            try:
                with transaction.atomic():
                    insert([row])
            except ROW_ERRORS as exc:
                skipped.append(row)
                logger.warning("skipped a %s row that could not be inserted (%s): %r", model.__name__, exc, row)
    return skipped
