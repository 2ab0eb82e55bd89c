"""The bare `websockets` ceiling: parse each JSON frame and ack it, nothing else.

`python -m bench.echo_servers --port 9001 [--uvloop]`. It speaks enough of the robot contract
(any path, ack per telemetry frame, ack with `accepted` per batch) for the load generator and the
simulator to drive it unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def reply(text: str | bytes) -> str:
    try:
        frame = json.loads(text)
    except ValueError:
        return json.dumps({"type": "error", "code": "invalid_json", "detail": "not JSON", "seq": None})
    if frame.get("type") == "telemetry_batch":
        frames = frame.get("frames") or [{}]
        return json.dumps({"type": "ack", "seq": frames[-1].get("seq"), "accepted": len(frames)})
    return json.dumps({"type": "ack", "seq": frame.get("seq")})


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(reply(message))
    except ConnectionClosed:
        pass  # clients that vanish mid-frame are part of the load


async def main(host: str, port: int) -> None:
    async with serve(echo, host, port, compression=None, max_queue=None, ping_interval=None) as server:
        gc.collect()
        gc.freeze()
        print(f"listening on {host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.host, args.port))
    else:
        asyncio.run(main(args.host, args.port))
