"""The platform's original FastAPI router, as a bare ASGI app: accept, then `Echo: <text>` per text frame.

Served by stock daphne: `daphne -b 127.0.0.1 -p 9003 bench.bare_echo:application`. No Django, no
parsing, no framework: it does less per frame than the FastAPI route did (FastAPI's WebSocket
wrapper adds a few checks per message), so it is the stricter reference for the robot route.
"""

from __future__ import annotations


async def application(scope: dict, receive, send) -> None:
    if scope["type"] != "websocket":
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": f"Echo: {text}"})
