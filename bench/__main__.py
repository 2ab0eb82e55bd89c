"""`python -m bench [--quick] [--runs N] [--cases a,b] [--out DIR]`: the benchmark, what `make bench` runs.

It starts its own servers on loopback, pins server and load generator to different cores when it can,
runs each case N times (3 by default), prints a markdown table (median, min, max) and writes it with
a PNG plot to bench/results/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench.cases import CASES

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 3 s per case (to check the harness)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the table and plot")
    args = parser.parse_args(argv)
    args.cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in args.cases if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    return args


def header(bench, args) -> str:
    import django
    import websockets

    pinning = (
        f"server on CPU {bench.server_cpu}, load generators on CPU {bench.client_cpu}"
        if bench.pinned
        else "not pinned (fewer than 2 usable CPUs)"
    )
    return "\n".join(
        [
            f"# Fleet Telemetry benchmark{' (quick)' if args.quick else ''}",
            "",
            f"- {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {args.runs} run(s) per case;"
            f" {'~3 s' if args.quick else '15 s'} per measurement",
            f"- {platform.processor() or platform.machine()}, {len(bench.cpus)} usable CPU(s); {pinning}",
            f"- Python {platform.python_version()}, Django {django.get_version()}, websockets {websockets.__version__}",
            f"- Redis {bench.redis_url.split('://')[0]}, database {bench.database_url.split('://')[0]}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.environment import prepare

    bench, cleanups = prepare(args.quick)
    from bench import report
    from bench.cases import CASES, Skip

    runs: list[list[dict]] = []
    notes: list[str] = []
    try:
        for name in args.cases:
            for run in range(args.runs):
                print(f"… {name}, run {run + 1}/{args.runs}", file=sys.stderr, flush=True)
                bench.reset_redis()
                try:
                    rows = CASES[name](bench)
                except Skip as skip:
                    notes.append(f"- {name}: skipped: {skip}")
                    break
                except Exception as exc:
                    traceback.print_exc()
                    notes.append(f"- {name}: failed in run {run + 1}: {type(exc).__name__}: {str(exc)[:300]}")
                    bench.stop_all()
                    break
                runs.append(rows)
            if name == "ceilings":
                floors = [
                    row["frames/s"]
                    for rows in runs
                    for row in rows
                    if row["case"] == "1 ceiling: Channels echo on daphne"
                ]
                bench.floor = statistics.median(floors) if floors else None
        summary = report.summarize(runs)
        text = header(bench, args) + "\n\n" + report.ratio_line(summary) + report.markdown(summary) + "\n"
        if notes:
            text += "\n" + "\n".join(notes) + "\n"
        print(text)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ("-quick" if args.quick else "")
        (args.out / f"{stamp}.md").write_text(text)
        (args.out / "latest.md").write_text(text)
        if report.plot(summary, args.out / f"{stamp}.png"):
            (args.out / "latest.png").write_bytes((args.out / f"{stamp}.png").read_bytes())
        print(f"Written to {args.out / (stamp + '.md')}", file=sys.stderr)
    finally:
        bench.stop_all()
        for cleanup in cleanups:
            cleanup()
    return 1 if any("failed" in note for note in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
