"""The connection edge's load generators: `python -m bench.edge_load SPEC.json` prints one JSON line.

Modes (on uvloop, like bench.loadgen):
- storm: every robot connects at once (`concurrency` handshakes in flight), sends one frame and waits
  for its ack; reports handshakes/s and when the last first frame was acked. Sockets stay open to the end.
- flood: for `duration` s, `bogus_rate` handshakes/s with valid robot ids and wrong tokens, while the
  `robots` stream at `rate` Hz and the `reconnector` robot reconnects every `reconnect_every` s;
  reports the reconnector's handshake times and the streaming robots' ack latencies.
- attack: `large` sockets send messages of `large_bytes` as fast as TCP takes them, `errors` sockets send
  `errors_rate` batches a second of 99 invalid frames and 1 valid one; none of them ever reads. Reports
  how long the server took to drop each one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time

from websockets.asyncio.client import connect

from bench.loadgen import FRAME, Tally, Window, headers, paced_client, percentile, run_main

GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


def _options() -> dict:
    return {"compression": None, "ping_interval": None, "open_timeout": 60, "max_queue": None}


def _ms(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value * 1000, 2)


# --- storm ---------------------------------------------------------------------------------------


async def storm(spec: dict) -> dict:
    base = spec["url"].rstrip("/")
    gate = asyncio.Semaphore(spec["concurrency"])
    errors: dict[str, int] = {}
    handshaken: list[float] = []
    acked: list[float] = []
    sockets = []
    started = time.monotonic()

    async def one(robot_id: str, token: str | None) -> None:
        try:
            async with gate:
                ws = await connect(
                    f"{base}/api/telemetry/ws/{robot_id}", additional_headers=headers(token), **_options()
                )
            handshaken.append(time.monotonic() - started)
            sockets.append(ws)
            await ws.send(FRAME.format(seq=1, ts=time.time()))
            reply = await asyncio.wait_for(ws.recv(), 60)
            if '"ack"' in reply:
                acked.append(time.monotonic() - started)
            else:
                errors["no ack"] = errors.get("no ack", 0) + 1
        except Exception as exc:
            name = f"{type(exc).__name__} {exc}"[:100]
            errors[name] = errors.get(name, 0) + 1

    await asyncio.gather(*(one(robot_id, token) for robot_id, token in spec["robots"]))
    await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 60)
    last_handshake = max(handshaken) if handshaken else None
    return {
        "robots": len(spec["robots"]),
        "handshakes": len(handshaken),
        "handshakes_per_s": round(len(handshaken) / last_handshake, 1) if last_handshake else None,
        "acked": len(acked),
        "all_acked_s": round(max(acked), 2) if len(acked) == len(spec["robots"]) else None,
        "errors": errors,
    }


# --- flood ---------------------------------------------------------------------------------------


async def flood(spec: dict) -> dict:
    base = spec["url"].rstrip("/")
    tally = Tally()
    window = Window(spec.get("warmup", 1.0), spec["duration"])
    streams = []
    for robot_id, token in spec["robots"]:
        streams.append(
            (
                robot_id,
                await connect(f"{base}/api/telemetry/ws/{robot_id}", additional_headers=headers(token), **_options()),
            )
        )
    clients = [
        asyncio.create_task(paced_client(robot_id, ws, window, tally, spec["rate"], n / len(streams)))
        for n, (robot_id, ws) in enumerate(streams)
    ]
    refused = {"offered": 0, "403": 0, "other": 0}
    handshakes: list[float] = []
    reconnect_errors: dict[str, int] = {}

    host, port = base.split("//", 1)[1].rsplit(":", 1)

    async def bogus(robot_id: str) -> None:
        # A bare upgrade request on a socket: the websockets client would cost this process more than the server.
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(upgrade_request(host, int(port), f"/api/telemetry/ws/{robot_id}", "not-the-token"))
            status = await asyncio.wait_for(reader.readline(), 30)
            writer.transport.abort()
            refused["403" if b" 403 " in status else "other"] += 1
        except Exception:
            refused["other"] += 1

    async def bogus_flood() -> None:
        ids = spec["bogus_ids"]
        interval = 1.0 / spec["bogus_rate"]
        due = time.monotonic()
        pending: set[asyncio.Task] = set()
        while not window.over:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(bogus(ids[refused["offered"] % len(ids)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            refused["offered"] += 1
            due += interval
        await asyncio.wait(pending, timeout=10) if pending else None

    async def reconnector() -> None:
        robot_id, token = spec["reconnector"]
        while not window.over:
            began = time.monotonic()
            try:
                ws = await connect(
                    f"{base}/api/telemetry/ws/{robot_id}", additional_headers=headers(token), **_options()
                )
            except Exception as exc:
                name = f"{type(exc).__name__} {exc}"[:100]
                reconnect_errors[name] = reconnect_errors.get(name, 0) + 1
            else:
                if window.inside(began):
                    handshakes.append(time.monotonic() - began)
                await ws.close()
            await asyncio.sleep(max(0.0, began + spec["reconnect_every"] - time.monotonic()))

    extra = [asyncio.create_task(bogus_flood()), asyncio.create_task(reconnector())]
    await asyncio.sleep(max(0.0, window.end - time.monotonic()))
    window.over = True
    await asyncio.wait(clients + extra, timeout=15)
    await asyncio.gather(*(ws.close() for _, ws in streams), return_exceptions=True)
    return {
        "ack_p50_ms": percentile(tally.latencies, 0.5),
        "ack_p99_ms": percentile(tally.latencies, 0.99),
        "frames": tally.frames,
        "stream_errors": tally.errors,
        "handshake_p50_ms": _ms(handshakes, 0.5),
        "handshake_p99_ms": _ms(handshakes, 0.99),
        "reconnects": len(handshakes),
        "reconnect_errors": reconnect_errors,
        "bogus_offered": refused["offered"],
        "bogus_refused_403": refused["403"],
        "bogus_other": refused["other"],
    }


# --- attack --------------------------------------------------------------------------------------


def client_frame(payload: bytes) -> bytes:
    """A final masked text frame with an all-zero mask: no XOR to compute, so the attacker is never the limit."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 2**16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    return header + b"\0\0\0\0" + payload


def upgrade_request(host: str, port: int, path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


async def open_raw(host: str, port: int, path: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: replies pile up in the server
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    # limit: the stream stops reading once a few KiB are buffered, and this client never reads them.
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(upgrade_request(host, port, path, token))
    status = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in status.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"attacker refused: {status[:40]!r}")
    return reader, writer


async def attacker(kind: str, spec: dict, robot: list, started: float) -> dict:
    host, port = spec["host"], spec["port"]
    _, writer = await open_raw(host, port, f"/api/telemetry/ws/{robot[0]}", robot[1])
    opened = time.monotonic()
    if kind == "large":
        message = client_frame(json.dumps({"type": "telemetry", "pad": "x" * (spec["large_bytes"] - 40)}).encode())
        interval = 0.0
    else:
        frames = [{}] * 99 + [{"type": "telemetry", "ts": time.time(), **GOOD}]
        message = client_frame(json.dumps({"type": "telemetry_batch", "frames": frames}).encode())
        interval = 1.0 / spec["errors_rate"]
    sent = 0
    try:
        while time.monotonic() - opened < spec["give_up_after"]:
            writer.write(message)
            await writer.drain()
            sent += 1
            if interval:
                await asyncio.sleep(interval)
            elif sent % 16 == 0:
                await asyncio.sleep(0)  # let the other attackers have the loop
        closed_after = None
    except (ConnectionError, OSError):
        closed_after = time.monotonic() - opened
    writer.transport.abort()
    return {"kind": kind, "closed_after_s": None if closed_after is None else round(closed_after, 2), "sent": sent}


async def attack(spec: dict) -> dict:
    started = time.monotonic()
    robots = spec["robots"]
    kinds = ["large"] * spec["large"] + ["errors"] * spec["errors"]
    results = await asyncio.gather(*(attacker(kind, spec, robots[n], started) for n, kind in enumerate(kinds)))
    return {"attackers": results}


def main() -> None:
    run_main({"storm": storm, "flood": flood, "attack": attack})


if __name__ == "__main__":
    main()
