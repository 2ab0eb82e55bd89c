#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    if sys.argv[1:2] == ["runfleet"]:
        # runfleet is the local all-in-one (what `make run` calls): debug unless DJANGO_DEBUG says otherwise.
        # Every other command, qcluster included, gets the safe default (off).
        os.environ.setdefault("DJANGO_DEBUG", "1")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
