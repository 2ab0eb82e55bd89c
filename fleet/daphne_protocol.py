"""daphne's WebSocket protocol as Fleet runs it: every close code, limits on what clients send, a lean per-frame path.

Each override of an autobahn or Twisted internal says why, and tests/test_daphne_protocol.py fails
if the library changes under it.
"""

from __future__ import annotations

from autobahn.websocket import protocol as autobahn_protocol
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import tcp
from wsaccel.xormask import createXorMasker

_DEBUG_LEVELS = ("debug", "trace")


def debug_enabled(log) -> bool:
    """Whether a txaio logger emits debug lines (txaio makes a disabled level a no-op, but callers
    still build its arguments); unknown loggers count as enabled, which keeps autobahn's own path."""
    return getattr(log, "_log_level", "debug") in _DEBUG_LEVELS


def write_through(transport, data: bytes) -> None:
    """transport.write, but straight into the socket when nothing is queued ahead of the data.

    Twisted's write only buffers and registers the socket for writing: on the asyncio reactor that
    is a selector change to add the writer, a loop iteration, the send, and another change to remove
    it, around every frame. Like asyncio's own transports, try the send first: whatever the socket
    does not take (and any error) goes through transport.write, so buffering, producers and
    connection loss behave exactly as before, and order is kept because anything already queued
    sends this data through the queue too.
    """
    if (
        not isinstance(transport, tcp.Connection)
        or transport.TLS
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnecting
        or transport.dataBuffer
        or transport._tempDataLen
    ):
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if isinstance(sent, BaseException):
        transport.write(data)  # its doWrite meets the same error and reports the lost connection
    elif sent < len(data):
        transport.write(data[sent:])


def install_fast_unmasking() -> None:
    """Unmask client frames with wsaccel: autobahn builds a CFFI masker per frame (~7 µs), wsaccel ~1 µs."""
    autobahn_protocol.create_xor_masker = createXorMasker


class FleetWebSocketProtocol(WebSocketProtocol):
    """daphne's protocol, able to send every close code a server may use, and messages of any size."""

    def sendMessage(self, payload, *args, **kwargs):
        # The size limits bound what a client can make us buffer. autobahn applies them to what
        # we send as well, which would break a dashboard's snapshot of a large fleet (> 64 KiB).
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            return super().sendMessage(payload, *args, **kwargs)
        finally:
            self.maxMessagePayloadSize = limit

    def handle_reply(self, message):
        kind = message.get("type")
        if kind == "websocket.send" and self.state == self.STATE_OPEN and self._plain_frames():
            text = message.get("text")
            if text and not message.get("bytes"):  # (daphne raises on both; an empty text sends nothing)
                self._send_text(text.encode())
                return
        if kind != "websocket.close" or self.state == self.STATE_CONNECTING:
            return super().handle_reply(message)
        # autobahn's sendClose only takes 1000 and 3000-4999, so 1001 (server_shutdown),
        # 1008 (protocol_error) and 1009 (too_large) from the app would raise; sendCloseFrame
        # sends any code.
        code = message.get("code") or 1000
        reason = (message.get("reason") or "").encode()[:123] or None
        self.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)

    def dataReceived(self, data):
        # autobahn's version only adds a debug line, whose arguments it styles even when debug is off.
        if debug_enabled(self.log):
            return super().dataReceived(data)
        self._dataReceived(data)

    def onMessageEnd(self):
        # autobahn's version also fires its observable "message" event: with no listener that is
        # still a Deferred and two callbacks per message. Nothing here listens; if anything ever
        # does (or timings are traced), autobahn's own path runs.
        if self._listeners is not None or self.trackedTimings or self.failedByMe:
            return super().onMessageEnd()
        payload = b"".join(self.message_data)
        self.message_data = None
        self._onMessage(payload, self.message_is_binary)

    def sendData(self, data, sync=False, chopsize=None):
        # autobahn's version for an immediate write, without the styled debug line, through write_through.
        if sync or chopsize or self.send_queue or self.logOctets or debug_enabled(self.log):
            return super().sendData(data, sync, chopsize)
        write_through(self.transport, data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state == self.STATE_CONNECTING or self.state == self.STATE_PROXY_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)

    def _plain_frames(self) -> bool:
        """Whether a message goes out as one unmasked, uncompressed frame, untraced (as it always does here)."""
        options = (self._perMessageCompress, self.autoFragmentSize, self.maskServerFrames, self.logFrames)
        return not any(options) and not self.trackedTimings

    def _send_text(self, payload: bytes) -> None:
        """daphne's serverSend, autobahn's sendMessage and sendFrame for that case, in one step (RFC 6455 §5.2).

        Six calls, five type assertions and a byte-by-byte header per ack were about 5% of the route's CPU;
        tests check the bytes on the wire and the traffic counters against autobahn's own path.
        """
        length = len(payload)
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingWebSocketFrames += 1
        stats.outgoingOctetsAppLevel += length
        stats.outgoingOctetsWebSocketLevel += length
        if length <= 125:
            header = bytes((0x81, length))
        elif length <= 0xFFFF:
            header = b"\x81\x7e" + length.to_bytes(2, "big")
        else:
            header = b"\x81\x7f" + length.to_bytes(8, "big")
        self.sendData(header + payload)
