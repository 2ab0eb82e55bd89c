"""What one WebSocket may make a daphne process hold, enforced where the bytes are: in the protocol.

`BoundedProtocol` is mixed in before fleet.serve's daphne protocol (its handle_reply and onMessage run first):
- **incoming**: daphne hands each message to the app through an unbounded asyncio.Queue. More than
  TELEMETRY_MAX_PENDING_MESSAGES unprocessed messages close the socket with 1013 (try again later);
  the queued messages are dropped at once and the app hears `websocket.disconnect` with 1013.
- **outgoing** (robot sockets only): what the app sends to a peer that reads nothing piles up in
  Twisted's transport buffer, behind a kernel send buffer fixed at KERNEL_SEND_BUFFER. More than
  TELEMETRY_MAX_UNSENT_BYTES unsent closes it with 1013 too.
  Dashboards are left out: they have their own flow control (syncs) and a large snapshot is normal.
- **pings**: daphne resets its ping timer on every incoming message, and autobahn cancels the pong
  timeout on any incoming data, so a socket that keeps sending but never reads was never timed out.
  Here the timer only restarts when a ping is sent, and only a pong answers it: a peer that reads
  nothing is dropped ping_interval + ping_timeout after its last pong (fleet.serve derives both from
  TELEMETRY_IDLE_TIMEOUT).
"""

from __future__ import annotations

import logging
import socket

from django.conf import settings

logger = logging.getLogger(__name__)

OVERLOADED = 1013
# Robot sockets carry small replies: far more than they ever need in flight.
KERNEL_SEND_BUFFER = 128 * 1024
MIN_PONG_TIMEOUT = 5
# Only robot sockets get the outgoing bound (see above).
BOUNDED_OUTGOING_PREFIX = b"/api/telemetry/ws/"


def unsent_bytes(transport) -> int:
    """Bytes written to a Twisted TCP transport (under any wrappers) that the kernel has not taken yet."""
    while transport is not None and not hasattr(transport, "dataBuffer"):
        transport = getattr(transport, "transport", None)
    if transport is None:
        return 0
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def ping_timings(idle_timeout: float) -> tuple[int, int]:
    """(ping interval, pong timeout) in whole seconds, daphne's unit: 20 s and 30 s, each at most a quarter of
    the idle timeout. The pong timeout is never under MIN_PONG_TIMEOUT, so that a busy but healthy peer is
    not dropped: with an idle timeout of 20 s or more, a silent peer is dropped within it."""
    quarter = max(1, int(idle_timeout // 4))
    return min(20, quarter), max(MIN_PONG_TIMEOUT, min(30, quarter))


class BoundedProtocol:
    """Mix in before daphne's WebSocketProtocol."""

    max_pending = 64
    max_unsent = 2**20
    bounded_outgoing = False
    overloaded = False

    @classmethod
    def configure(cls) -> None:
        cls.max_pending = settings.TELEMETRY_MAX_PENDING_MESSAGES
        cls.max_unsent = settings.TELEMETRY_MAX_UNSENT_BYTES

    def onConnect(self, request):
        self.bounded_outgoing = request.path.encode("ascii", "replace").startswith(BOUNDED_OUTGOING_PREFIX)
        if self.bounded_outgoing:
            handle = getattr(self.transport, "getHandle", lambda: None)()
            if isinstance(handle, socket.socket):
                # A fixed kernel send buffer: Linux would otherwise grow it to 4 MiB for a peer that reads
                # nothing, which holds that much more and hides it from the bound on unsent bytes.
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
            # Twisted's HTTP channel is still the transport's producer: past 64 KiB unsent it stops reading
            # the socket, and a peer that reads nothing then sits there until its pings time out. The bounds
            # here decide instead: reading goes on, and the socket is closed (1013) past TELEMETRY_MAX_UNSENT_BYTES.
            if getattr(self.transport, "producer", None) is not None:
                self.transport.unregisterProducer()
        return super().onConnect(request)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # daphne's onMessage, without `self.last_ping = time.time()` (see the module docstring).
        if self.muted:
            return
        queue = self.application_queue
        if queue.qsize() >= self.max_pending:
            self.overload("incoming")
            return
        if isBinary:
            queue.put_nowait({"type": "websocket.receive", "bytes": payload})
        else:
            queue.put_nowait({"type": "websocket.receive", "text": payload.decode("utf8")})

    def handle_reply(self, message: dict) -> None:
        if message.get("type") == "websocket.send" and self.state != self.STATE_OPEN:
            return  # closing: what the app still sends is dropped, not raised back at it
        super().handle_reply(message)
        if self.bounded_outgoing and unsent_bytes(self.transport) > self.max_unsent:
            self.overload("outgoing")

    def overload(self, direction: str) -> None:
        """Close with 1013 and let go of everything queued for this socket, in both directions."""
        if self.overloaded:
            return
        self.overloaded = True
        logger.info("closing %s with 1013: too much %s data pending", self.client_addr, direction)
        queue = getattr(self, "application_queue", None)
        if queue is not None:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait({"type": "websocket.disconnect", "code": OVERLOADED})
        # Muted: later messages are dropped, and onClose sends the app no second disconnect.
        self.muted = True
        # The peer may never read the close frame: autobahn aborts the TCP connection after closeHandshakeTimeout.
        self.sendCloseFrame(code=OVERLOADED, reasonUtf8=b"overloaded", isReply=False)
