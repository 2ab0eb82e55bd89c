"""The soak harness (`make soak`) keeps working: a 30-second, 100-robot version of it on its own stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.servers import BASE_DIR


def test_a_short_soak_loses_no_frame_and_counts_every_mission_exactly(tmp_path):
    # Its own stack (temporary SQLite and embedded Redis), whatever this test run uses.
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env["PYTHONPATH"] = str(BASE_DIR / "clients" / "python")  # the robots' client library, from the checkout
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--robots", "100", "--seconds", "30", "--out", str(tmp_path), "--json"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # 0 only when every verdict holds, the memory one included.
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    summary = result["summary"]
    assert (summary["submitted"], summary["acked"], result["lost"], summary["buffered"]) == (3000, 3000, 0, 0)
    assert result["server_accepted"] == 3000
    assert result["counted"] == {**result["written"], "invalid": 0}
    assert sum(result["written"].values()) == 600
    assert result["checks"]["no frame lost"] and result["checks"]["counters equal the entries written"]
    # The report is written where asked, with every section.
    (report,) = tmp_path.glob("*.md")
    text = report.read_text()
    (plot,) = tmp_path.glob("*.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"![RSS and ack p99 over time]({plot.name})" in text
    for heading in (
        "## Verdict",
        "## Frames",
        "## Ack latency over time",
        "## Memory (RSS, MiB)",
        "## Mission counters",
    ):
        assert heading in text
