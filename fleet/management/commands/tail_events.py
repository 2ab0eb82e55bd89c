"""`manage.py tail_events [--type PREFIX] [--follow] [--since ID]`: print events as JSON lines."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from fleet.events.reading import STREAM_ID, follow_events, recent_events
from fleet.redis import STREAMS, new_client


class Command(BaseCommand):
    help = "Print lifecycle events from the event stream, one JSON object per line."

    def add_arguments(self, parser):
        parser.add_argument("--type", default="", help="Only events whose type starts with this prefix.")
        parser.add_argument("--follow", "-f", action="store_true", help="Keep printing new events as they arrive.")
        parser.add_argument("--since", help="Print every event after this stream ID (instead of the last --count).")
        parser.add_argument("--count", type=int, default=20, help="Without --since, start with the last N events.")

    def handle(self, *args, type: str, follow: bool, since: str | None, count: int, **options):
        if since is not None and since != "0" and not STREAM_ID.match(since):
            raise CommandError("--since must be a stream ID such as 1703003456789-0")
        # Blocking reads wait up to a second, longer than the request-path socket timeout.
        client = new_client(STREAMS, socket_timeout=5)
        try:
            if since is None:
                recent, _ = recent_events(client, type, None, count)
                for event in reversed(recent):
                    self._print(event)
                since = recent[0]["stream_id"] if recent else "$"
            for event in follow_events(client, type, since, follow=follow):
                self._print(event)
        except KeyboardInterrupt:
            pass

    def _print(self, event: dict) -> None:
        self.stdout.write(json.dumps(event, separators=(",", ":")))
        self.stdout.flush()
