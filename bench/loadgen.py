"""The load generator: a separate process on uvloop, driven by a JSON spec, answering with JSON.

`python -m bench.loadgen SPEC.json` prints one JSON line with the result. Modes:
- closed: each robot keeps exactly one frame outstanding (send, wait for the ack, repeat): max load;
  with `"echo": true` the reply counted is the bare echo's `Echo: <frame>` instead of an ack;
- paced: each robot sends `rate` frames/s on a fixed schedule, whatever the acks do;
- idle: open the connections, print `READY {...}`, hold them until stdin closes;
- dashboard: connect to the fleet view, print `READY`, record telemetry until stdin closes.
Only frames sent inside the measurement window (after `warmup`) are counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# No Django in the simulator package: ~20 ms and ~2 MB at start-up, before any measurement window.
from telemetry.simulator import percentile

# ~200 bytes on the wire, like a real frame with a little firmware metadata (unknown keys are ignored).
FRAME = (
    '{{"type":"telemetry","seq":{seq},"ts":{ts:.3f},"cpu_usage":45.2,"memory_usage":62.8,'
    '"network_latency_ms":12.5,"battery_percentage":78.0,"fw":"2.4.1","mode":"patrol","zone":"bay-7"}}'
)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Window:
    """The measurement window: [start + warmup, start + warmup + duration)."""

    def __init__(self, warmup: float, duration: float) -> None:
        self.begin = time.monotonic() + warmup
        self.end = self.begin + duration
        self.wall_begin = time.time() + warmup  # for matching the dashboard's reported_at
        self.wall_end = self.wall_begin + duration
        self.over = False

    def inside(self, t: float) -> bool:
        return self.begin <= t < self.end


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.frames = 0
        self.rejected = 0
        self.errors: dict[str, int] = {}
        self.last: dict[str, int] = {}  # robot_id -> last acked seq

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1


def headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def open_all(spec: dict, tally: Tally) -> list:
    """Connect every robot, `connect_concurrency` handshakes at a time. Returns [(robot_id, ws or None)]."""
    gate = asyncio.Semaphore(spec.get("connect_concurrency", 100))
    base = spec["url"].rstrip("/")

    async def one(robot_id: str, token: str | None):
        async with gate:
            try:
                return robot_id, await connect(
                    f"{base}/api/telemetry/ws/{robot_id}",
                    additional_headers=headers(token),
                    compression=None,
                    ping_interval=None,
                    open_timeout=60,
                    max_queue=None,
                )
            except Exception as exc:
                tally.error(f"connect: {type(exc).__name__} {exc}"[:120])
                return robot_id, None

    return await asyncio.gather(*(one(robot_id, token) for robot_id, token in spec["robots"]))


async def closed_client(robot_id: str, ws, window: Window, tally: Tally, echo: bool = False) -> None:
    seq = 0
    clock = time.monotonic
    expected = "Echo: " if echo else '"ack"'
    try:
        while not window.over:
            seq += 1
            sent = clock()
            await ws.send(FRAME.format(seq=seq, ts=time.time()))
            reply = await ws.recv()
            if not window.inside(sent):
                continue
            if reply.startswith(expected) if echo else expected in reply:
                tally.latencies.append((clock() - sent) * 1000)
                tally.frames += 1
                tally.last[robot_id] = seq
            else:
                tally.rejected += 1
                tally.error("unexpected reply" if echo else json.loads(reply).get("code", "unknown"))
    except ConnectionClosed as exc:
        tally.error(f"closed {exc.rcvd.code if exc.rcvd else None}")


async def paced_client(robot_id: str, ws, window: Window, tally: Tally, rate: float, offset: float) -> None:
    pending: dict[int, float] = {}
    clock = time.monotonic

    async def receive() -> None:
        async for reply in ws:
            message = json.loads(reply)
            seq = message.get("seq")
            sent = pending.pop(seq, None)
            if sent is None or not window.inside(sent):
                continue
            if message.get("type") == "ack":
                tally.latencies.append((clock() - sent) * 1000)
                tally.frames += 1
                tally.last[robot_id] = max(seq, tally.last.get(robot_id, 0))
            else:
                tally.rejected += 1
                tally.error(message.get("code", "unknown"))

    receiver = asyncio.create_task(receive())
    interval = 1.0 / rate
    due = clock() + offset * interval
    seq = 0
    try:
        while not window.over and not receiver.done():
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            seq += 1
            pending[seq] = clock()
            await ws.send(FRAME.format(seq=seq, ts=time.time()))
            due += interval
        deadline = clock() + 5
        while pending and not receiver.done() and clock() < deadline:
            await asyncio.wait({receiver}, timeout=0.01)
    except ConnectionClosed as exc:
        tally.error(f"closed {exc.rcvd.code if exc.rcvd else None}")
    finally:
        receiver.cancel()


async def run_load(spec: dict) -> dict:
    tally = Tally()
    started = time.monotonic()
    connections = await open_all(spec, tally)
    connect_seconds = time.monotonic() - started
    live = [(robot_id, ws) for robot_id, ws in connections if ws is not None]
    window = Window(spec.get("warmup", 1.0), spec["duration"])
    if spec["mode"] == "closed":
        echo = spec.get("echo", False)
        clients = [closed_client(robot_id, ws, window, tally, echo) for robot_id, ws in live]
    else:
        count = max(1, len(live))
        clients = [
            paced_client(robot_id, ws, window, tally, spec["rate"], n / count) for n, (robot_id, ws) in enumerate(live)
        ]
    tasks = [asyncio.create_task(client) for client in clients]
    await asyncio.sleep(max(0.0, window.end - time.monotonic()))
    window.over = True
    await asyncio.wait(tasks, timeout=10)
    await asyncio.gather(*(ws.close() for _, ws in live), return_exceptions=True)
    seconds = spec["duration"]
    return {
        "connected": len(live),
        "connect_seconds": round(connect_seconds, 3),
        "frames": tally.frames,
        "rejected": tally.rejected,
        "frames_per_s": round(tally.frames / seconds, 1),
        "p50_ms": percentile(tally.latencies, 0.5),
        "p99_ms": percentile(tally.latencies, 0.99),
        "errors": tally.errors,
        "last": tally.last,
        "window": [window.wall_begin, window.wall_end],
        "cpu_seconds": round(time.process_time(), 2),
    }


async def hold_idle(spec: dict) -> dict:
    tally = Tally()
    started = time.monotonic()
    connections = await open_all(spec, tally)
    seconds = time.monotonic() - started
    live = [ws for _, ws in connections if ws is not None]
    ready = {"connected": len(live), "connect_seconds": round(seconds, 3), "errors": tally.errors}
    print("READY " + json.dumps(ready), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    still_open = sum(1 for ws in live if ws.close_code is None)
    await asyncio.gather(*(ws.close() for ws in live), return_exceptions=True)
    return {**ready, "still_open": still_open}


async def watch_dashboard(spec: dict) -> dict:
    """Record each telemetry message's lag (receive time minus the frame's reported_at) and each robot's last seq."""
    samples: list[tuple[float, float]] = []  # (reported_at, lag ms); the caller keeps its load's window
    last: dict[str, int] = {}
    counts = {"messages": 0, "telemetry": 0, "syncs": 0}
    async with connect(
        spec["url"], additional_headers={"Origin": spec["origin"]}, compression=None, max_queue=None
    ) as ws:
        snapshot = json.loads(await ws.recv())
        print("READY " + json.dumps({"snapshot_robots": len(snapshot.get("robots", []))}), flush=True)
        done = asyncio.create_task(asyncio.to_thread(sys.stdin.read))
        while not done.done():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            now = time.time()
            counts["messages"] += 1
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "telemetry":
                counts["telemetry"] += 1
                robot_id, seq = message["robot_id"], message.get("seq") or 0
                if seq > last.get(robot_id, -1):
                    last[robot_id] = seq
                samples.append((message["reported_at"], (now - message["reported_at"]) * 1000))
            elif kind == "sync":
                # The fleet view sends no more until the dashboard acknowledges what it has.
                counts["syncs"] += 1
                await ws.send(json.dumps({"type": "ack", "sync": message["sync"]}))
    return {**counts, "samples": samples, "last": last}


def run_main(runners: dict) -> None:
    """Run the spec file's mode (argv[1]) and write its result beside the spec.

    The result goes to a file, not stdout: a dashboard's samples can run to megabytes, and a
    pipe read back through `communicate` has been seen to come back spliced at 128 KiB.
    """
    path = sys.argv[1]
    with open(path) as file:
        spec = json.load(file)
    if spec.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {spec["cpu"]})
    raise_nofile()
    runner = runners[spec["mode"]]
    try:
        import uvloop
    except ImportError:  # stock asyncio: the client itself may become the limit
        result = asyncio.run(runner(spec))
    else:
        result = uvloop.run(runner(spec))
    with open(result_path(path), "w") as file:
        json.dump(result, file)


def result_path(spec_path) -> str:
    return f"{spec_path}.result"


def main() -> None:
    run_main({"closed": run_load, "paced": run_load, "idle": hold_idle, "dashboard": watch_dashboard})


if __name__ == "__main__":
    main()
