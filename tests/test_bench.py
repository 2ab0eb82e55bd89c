"""`python -m bench --quick` keeps working: a subset of the cases, once each, against real servers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servers import BASE_DIR


def table(markdown: str) -> dict[str, dict[str, float]]:
    """{case: {measure: median}} from the bench's markdown table."""
    rows: dict[str, dict[str, float]] = {}
    case = None
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 5 or cells[0] in ("case", "---"):
            continue
        case = cells[0] or case
        if cells[2] not in ("–", "") and cells[1]:
            rows.setdefault(case, {})[cells[1]] = float(cells[2].replace(",", ""))
    return rows


@pytest.mark.e2e
def test_the_quick_bench_measures_ceilings_ingest_and_events(tmp_path):
    # Its own embedded Redis and database, like `make bench` on a fresh machine.
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--cases", "ceilings,ingest,events"]
        + ["--out", str(tmp_path)],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = (tmp_path / "latest.md").read_text()
    assert written.strip() in done.stdout
    rows = table(written)
    for case in ("1 ceiling: websockets echo", "1 ceiling: Channels echo on daphne"):
        assert rows[case]["frames/s"] > 0
        assert rows[case]["ack p99 ms"] > 0
    reference = rows["2 reference: bare echo on stock daphne"]
    assert reference["frames/s"] > 0 and reference["frames per server CPU-second"] > 0
    ingest = rows["2 ingest: robot route, everything on"]
    assert ingest["frames/s"] > 0 and ingest["ack p99 ms"] > 0 and ingest["% of Channels echo"] > 0
    assert ingest["% of bare echo on daphne"] > 0 and ingest["% of bare echo per CPU-second"] > 0
    assert "- **Robot route / bare echo on stock daphne (frames/s): " in written
    assert ingest["rejected"] == 0
    fanout = rows["3 fan-out lag at max load"]
    assert fanout["lag p99 ms"] > 0 and fanout["dashboard msgs"] > 0
    assert rows["2 ingest paced at 1000/s"]["frames/s"] > 0
    assert rows["7 events, Redis up"]["events/s"] > 0
    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")
