"""`python -m fleet_client --url ws://host:8000 --robot-id r2d2 --token …`: JSON objects from stdin, one a line.

Each line is submitted as one frame. On end of input it flushes and prints the stats as one JSON
line; the exit status is 0 when everything was acked, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from fleet_client.client import RobotClient


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fleet_client", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server, e.g. ws://127.0.0.1:8000")
    parser.add_argument("--robot-id", required=True)
    parser.add_argument(
        "--token",
        default=os.environ.get("FLEET_ROBOT_TOKEN"),
        help="the robot's token (default: $FLEET_ROBOT_TOKEN, which keeps it out of the process list)",
    )
    parser.add_argument("--buffer-path", help="a SQLite file that keeps unacked frames across restarts")
    parser.add_argument("--max-buffered", type=int, default=100_000)
    parser.add_argument("--flush-timeout", type=float, default=30.0, help="seconds to wait for acks at the end")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or FLEET_ROBOT_TOKEN) is required")
    return args


async def run(args: argparse.Namespace) -> int:
    client = RobotClient(
        url=args.url,
        robot_id=args.robot_id,
        token=args.token,
        buffer_path=args.buffer_path,
        max_buffered=args.max_buffered,
    )
    await client.start()
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            if not line.strip():
                continue
            try:
                client.submit(json.loads(line))
            except ValueError as exc:  # also json.JSONDecodeError
                print(f"skipped a line: {exc}", file=sys.stderr, flush=True)
        flushed = await client.flush(timeout=args.flush_timeout)
    finally:
        print(json.dumps(client.stats), flush=True)
        await client.close()
    return 0 if flushed else 1


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    sys.exit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
