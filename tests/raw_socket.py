"""A WebSocket client on a plain socket that never reads what the server sends: for hostile-input tests."""

from __future__ import annotations

import base64
import os
import socket
import struct


def mask(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    keystream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(size, "big")


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, masked client frame."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 2**16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    key = os.urandom(4)
    return header + key + mask(payload, key)


class RawWebSocket:
    def __init__(self, port: int, path: str, token: str, receive_buffer: int = 4096) -> None:
        self.sock = socket.socket()
        # A small receive window: what the server sends piles up on its side, not in our kernel.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            response += chunk
        self.status = int(response.split(b" ", 2)[1]) if response else None

    def send_text(self, text: str) -> bool:
        """Send one text message; False once the server has dropped the connection."""
        try:
            self.sock.sendall(frame(text.encode()))
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
