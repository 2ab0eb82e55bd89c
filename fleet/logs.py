"""Log formats: plain text, or one JSON object per line (DJANGO_LOG_FORMAT=json).

Code that works for one robot connection binds its robot_id and connection_id once
(`bind_connection`); every line logged from that task then carries them, in both formats. A
call may also pass them in `extra`.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from daphne.access import AccessLogGenerator

CONTEXT_FIELDS = ("robot_id", "connection_id")
_context: ContextVar[dict[str, str]] = ContextVar("fleet_log_context", default={})  # noqa: B039 (never mutated)


def bind_connection(robot_id: str, connection_id: str) -> None:
    """Tag every line logged from the current task (a socket's consumer) with its robot and connection."""
    _context.set({"robot_id": robot_id, "connection_id": connection_id})


class ContextFilter(logging.Filter):
    """Copy the bound robot_id and connection_id onto each record that doesn't carry its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name))
        return f"{line} [{tags}]" if tags else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, robot_id/connection_id, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # One line whatever the message holds: json.dumps escapes newlines.
        return json.dumps(entry, ensure_ascii=False, default=str)


class AccessLog(AccessLogGenerator):
    """daphne's access log (a line per HTTP request and per WebSocket connect, reject and disconnect)
    through the logger `fleet.access`, so that it takes DJANGO_LOG_FORMAT like every other line.

    daphne writes it straight to stdout, bypassing logging: with the JSON format the output was no
    longer one JSON object per line. A file named with `--access-log FILE` is written as daphne
    writes it. The address is the TCP peer's: behind a proxy, the proxy's (its own log has the client's).
    """

    logger = logging.getLogger("fleet.access")

    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        if self.stream is not sys.stdout:
            return super().write_entry(host, date, request, status, length, ident, user)
        self.logger.info('%s "%s" %s %s', host, request, status or "-", length or "-")
