"""Mission stream entries: their statuses, counted straight from raw XRANGE replies."""

from __future__ import annotations

import json
from collections import Counter as Tally

MAX_STATUS_LENGTH = 64


def tally(entries: list, data_key: bytes | str = b"data") -> tuple[Tally, int]:
    """Count valid statuses in raw XRANGE entries ([id, [field, value, ...]]); returns (statuses, invalid)."""
    statuses: list[str] = []
    append = statuses.append
    parse = _parse_json
    invalid = 0
    for _entry_id, fields in entries:
        # Producers write `data` first; look further only when they didn't.
        if fields and fields[0] == data_key:
            raw = fields[1]
        else:
            raw = next((fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i] == data_key), None)
            if raw is None:
                invalid += 1
                continue
        try:
            doc = parse(raw)
        except ValueError:  # bad JSON, or bytes that are not UTF-8
            invalid += 1
            continue
        status = doc.get("status") if type(doc) is dict else None
        if type(status) is not str or len(status) > MAX_STATUS_LENGTH:
            invalid += 1
            continue
        append(status)
    return Tally(statuses), invalid


_scan_once = json.JSONDecoder().scan_once


def _parse_json(raw: bytes | str) -> object:
    """json.loads, about twice as fast on the common case (a compact document, nothing around it)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        doc, end = _scan_once(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)  # raises the proper ValueError, or accepts leading whitespace
    if end != len(text):
        return json.loads(text)  # trailing whitespace is fine, trailing garbage is not
    return doc
