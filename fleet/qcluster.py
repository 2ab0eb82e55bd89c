"""Run Django-Q2's cluster as runfleet does: `python -m fleet.qcluster` is `manage.py qcluster`, stopping faster.

Once Django is set up, the start-up heap is frozen (gc.freeze): the leader allocates little after
that, and the interpreter's exit no longer scans Django's hundred thousand objects, which takes
0.6-1 s on a busy machine, after the cluster itself has stopped in about half a second. The
sentinel and its children are forked from the frozen heap, which also keeps more of it shared.
How the cluster is stopped is in fleet.cluster.
"""

from __future__ import annotations

import gc
import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    gc.collect()
    gc.freeze()
    from django.core.management import call_command

    call_command("qcluster", *(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
