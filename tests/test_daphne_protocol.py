"""fleet.daphne_protocol and fleet.serve's reactor tweak: what each override of a library internal relies on."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket

import pytest
import txaio
from autobahn.twisted.websocket import WebSocketAdapterProtocol, WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import ObservableMixin
from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.xormasker import create_xor_masker
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import asyncioreactor, tcp
from twisted.internet.protocol import Protocol
from twisted.python import log as twisted_log
from wsaccel.xormask import createXorMasker

from fleet.daphne_protocol import (
    FleetWebSocketProtocol,
    debug_enabled,
    install_fast_unmasking,
    install_quiet_option_dump,
    write_through,
)
from fleet.serve import LISTEN_BACKLOG, FleetServer, with_backlog


def fingerprint(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


# A changed fingerprint means the library changed a method that Fleet overrides or bypasses:
# read the new version, carry what changed into the override, then update the fingerprint.
@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (autobahn_protocol.WebSocketProtocol.sendData, "5dcca425b048b07e"),  # FleetWebSocketProtocol.sendData
        (WebSocketAdapterProtocol.dataReceived, "7997f762de218433"),  # FleetWebSocketProtocol.dataReceived
        (twisted_log.callWithLogger, "802f8564bca3531f"),  # fleet.serve.dispatch_socket_event
        # FleetWebSocketProtocol._send_text does the work of these four for a plain text frame.
        (autobahn_protocol.WebSocketProtocol.sendMessage, "048d6bcf0d712309"),
        (autobahn_protocol.WebSocketProtocol.sendFrame, "89cc8b024c413aa0"),
        (WebSocketProtocol.handle_reply, "5331423b1cf2016a"),
        (WebSocketProtocol.serverSend, "345f21330d2a18ce"),
        # FleetWebSocketProtocol.onMessageEnd skips the "message" event that fire() builds for no listener.
        (autobahn_protocol.WebSocketProtocol.onMessageEnd, "efff2a43ca8540d0"),
        (ObservableMixin.fire, "25429a670af93ea0"),
        # FleetServer._reap forgets a finished connection as daphne's checker would, only sooner.
        (Server.application_checker, "ccb688341a7d0bc1"),
        (Server.create_application, "f1e300b4ecf636c8"),
        (Server.protocol_disconnected, "c1f5fe8cdedc09dc"),
    ],
    ids=[
        "autobahn sendData",
        "autobahn dataReceived",
        "twisted callWithLogger",
        "autobahn sendMessage",
        "autobahn sendFrame",
        "daphne handle_reply",
        "daphne serverSend",
        "autobahn onMessageEnd",
        "autobahn fire",
        "daphne application_checker",
        "daphne create_application",
        "daphne protocol_disconnected",
    ],
)
def test_the_library_methods_fleet_overrides_are_the_ones_it_was_written_against(function, expected):
    assert fingerprint(function) == expected


def test_autobahn_creates_a_masker_per_frame_through_the_name_fleet_replaces(monkeypatch):
    assert "create_xor_masker" in autobahn_protocol.WebSocketProtocol.processData.__code__.co_names
    monkeypatch.setattr(autobahn_protocol, "create_xor_masker", autobahn_protocol.create_xor_masker)  # restored after
    install_fast_unmasking()
    assert autobahn_protocol.create_xor_masker is createXorMasker


def test_autobahn_formats_each_connections_options_through_the_name_fleet_replaces(monkeypatch):
    # Where the name is used: the options dump of every new connection (and two debug-only helpers).
    assert "pformat" in autobahn_protocol.WebSocketProtocol._connectionMade.__code__.co_names
    monkeypatch.setattr(autobahn_protocol, "pformat", autobahn_protocol.pformat)  # restored after
    install_quiet_option_dump()
    monkeypatch.setattr(txaio, "get_global_log_level", lambda: "info")
    assert autobahn_protocol.pformat([("autoPingTimeout", 30, "Factory")]) == "(not formatted: debug logging is off)"
    monkeypatch.setattr(txaio, "get_global_log_level", lambda: "debug")
    assert autobahn_protocol.pformat([("autoPingTimeout", 30, "Factory")]) == "[('autoPingTimeout', 30, 'Factory')]"


@pytest.mark.parametrize("length", [0, 1, 5, 127, 128, 200, 1000, 70_000])
def test_wsaccel_unmasks_like_autobahn_even_across_split_reads(length):
    payload = bytes(range(256)) * (length // 256 + 1)
    payload = payload[:length]
    mask = b"\x9a\x01\xfe\x42"
    theirs, ours = create_xor_masker(mask, length), createXorMasker(mask, length)
    cut = length // 3
    assert ours.process(payload[:cut]) + ours.process(payload[cut:]) == theirs.process(payload)
    assert ours.pointer() == theirs.pointer() == length


def test_the_reactor_registers_sockets_through_the_name_fleet_serve_replaces():
    names = asyncioreactor.AsyncioSelectorReactor.addReader.__code__.co_names
    assert "callWithLogger" in names
    assert "callWithLogger" in asyncioreactor.AsyncioSelectorReactor.addWriter.__code__.co_names


def test_debug_lines_count_as_enabled_only_at_debug_level_or_below():
    log = txaio.make_logger()
    log.set_log_level("info")
    assert debug_enabled(log) is False
    log.set_log_level("debug")
    assert debug_enabled(log) is True
    log.set_log_level("trace")
    assert debug_enabled(log) is True
    assert debug_enabled(object()) is True  # a logger of another kind: keep autobahn's own path
    assert debug_enabled(FleetWebSocketProtocol.log) is (FleetWebSocketProtocol.log._log_level in ("debug", "trace"))


class Reactor:
    """Just enough of a reactor to register a tcp.Server with, recording what is asked of it."""

    def __init__(self) -> None:
        self.writers: list = []

    def addReader(self, reader) -> None:
        pass

    def removeReader(self, reader) -> None:
        pass

    def addWriter(self, writer) -> None:
        if writer not in self.writers:
            self.writers.append(writer)

    def removeWriter(self, writer) -> None:
        if writer in self.writers:
            self.writers.remove(writer)

    def removeAll(self) -> list:
        return []


@pytest.fixture
def connection():
    """A real Twisted TCP server transport on one end of a socket pair, and the other end."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 1), None, 1, Reactor())
    yield transport, peer
    ours.close()
    peer.close()


def read_all(peer: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_write_with_nothing_queued_reaches_the_socket_without_registering_a_writer(connection):
    transport, peer = connection
    write_through(transport, b"frame one")
    write_through(transport, b"frame two")
    assert transport.reactor.writers == []
    assert read_all(peer) == b"frame oneframe two"


def test_what_the_socket_cannot_take_is_queued_by_twisted_and_later_writes_keep_their_order(connection):
    transport, peer = connection
    big = bytes(range(256)) * 40_000  # 10 MB: more than a socket pair buffers
    write_through(transport, big)
    assert transport.reactor.writers == [transport]
    assert transport._tempDataLen > 0
    write_through(transport, b"after")
    received = read_all(peer)
    while transport.reactor.writers:
        transport.doWrite()
        received += read_all(peer)
    assert received == big + b"after"


def test_once_the_connection_is_closing_twisted_decides_what_is_still_written(connection):
    transport, peer = connection
    transport.loseConnection()
    write_through(transport, b"late")
    assert read_all(peer) == b""  # not straight to the socket: into Twisted's queue, as before
    assert transport._tempDataLen == len(b"late")


@pytest.fixture
def protocol(connection):
    """FleetWebSocketProtocol on a real TCP transport, past its handshake, as daphne leaves it."""
    transport, peer = connection
    factory = WebSocketServerFactory()
    factory.protocol = FleetWebSocketProtocol
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(transport)
    protocol.state = protocol.STATE_OPEN
    return protocol, peer


def counters(protocol) -> dict:
    return {name: value for name, value in vars(protocol.trafficStats).items() if name.startswith("outgoing")}


@pytest.mark.parametrize("text", ["", "a", "x" * 125, "x" * 126, "é" * 40, "y" * 65_535, "z" * 65_536, "w" * 300_000])
def test_a_text_message_goes_out_as_autobahn_would_send_it(protocol, text):
    protocol, peer = protocol
    assert protocol._plain_frames()  # so handle_reply below takes the one-step path
    WebSocketServerProtocol.sendMessage(protocol, text.encode(), False)
    theirs, their_counters = read_all_of(protocol, peer), counters(protocol)
    protocol.trafficStats.reset()
    protocol.handle_reply({"type": "websocket.send", "text": text})
    if not text:  # daphne sends nothing for an empty text
        assert read_all_of(protocol, peer) == b""
        return
    assert read_all_of(protocol, peer) == theirs
    assert counters(protocol) == their_counters


def read_all_of(protocol, peer: socket.socket) -> bytes:
    received = read_all(peer)
    while protocol.transport.reactor.writers:
        protocol.transport.doWrite()
        received += read_all(peer)
    return received


def test_a_message_with_both_text_and_bytes_is_refused_as_daphne_refuses_it(protocol):
    protocol, peer = protocol
    with pytest.raises(ValueError, match="both bytes and text"):
        protocol.handle_reply({"type": "websocket.send", "text": "a", "bytes": b"b"})
    assert read_all(peer) == b""


def test_a_whole_message_is_handed_to_daphne_once_and_listeners_still_hear_of_it(protocol):
    protocol, _ = protocol
    received, heard = [], []
    protocol.onMessage = lambda payload, is_binary: received.append((payload, is_binary))
    protocol.message_data, protocol.message_is_binary = [b'{"type":', b'"ping"}'], False
    protocol.onMessageEnd()
    assert received == [(b'{"type":"ping"}', False)]
    assert protocol.message_data is None

    protocol.on("message", lambda payload, is_binary: heard.append(payload))  # autobahn's own path again
    protocol.message_data, protocol.message_is_binary = [b"x"], True
    protocol.onMessageEnd()
    assert received == [(b'{"type":"ping"}', False), (b"x", True)]
    assert heard == [b"x"]


def test_tcp_and_unix_endpoints_listen_with_fleets_backlog_unless_they_name_one():
    assert (
        with_backlog("tcp:port=8000:interface=127.0.0.1")
        == f"tcp:port=8000:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
    )
    assert with_backlog("unix:/run/fleet.sock") == f"unix:/run/fleet.sock:backlog={LISTEN_BACKLOG}"
    assert with_backlog("tcp:port=8000:backlog=10") == "tcp:port=8000:backlog=10"
    assert with_backlog("fd:fileno=3") == "fd:fileno=3"  # already listening
    assert FleetServer(application=None, endpoints=["tcp:port=1:interface=::1"]).endpoints == [
        f"tcp:port=1:interface=::1:backlog={LISTEN_BACKLOG}"
    ]


def _unstarted_server() -> FleetServer:
    server = FleetServer(application=_application, endpoints=["tcp:port=1"])
    server.connections = {}  # as Server.run sets it
    return server


async def _application(scope, receive, send):
    if scope["fail"]:
        raise RuntimeError("for daphne's checker to log")
    if scope["wait"]:
        await receive()


@pytest.mark.parametrize("order", ["returns first", "disconnects first"])
async def test_a_closed_connection_is_forgotten_as_soon_as_its_application_returns(order):
    server = _unstarted_server()
    protocol = object()
    server.protocol_connected(protocol)
    queue = server.create_application(protocol, {"fail": False, "wait": order == "disconnects first"})
    if order == "disconnects first":
        server.protocol_disconnected(protocol)
        assert protocol in server.connections  # its application is still running
        queue.put_nowait({"type": "websocket.disconnect"})
    else:
        await asyncio.sleep(0)
        assert protocol in server.connections  # still connected
        server.protocol_disconnected(protocol)
    for _ in range(3):
        await asyncio.sleep(0)
    assert protocol not in server.connections
    server.protocol_disconnected(protocol)  # daphne's second call for the same connection is harmless


async def test_a_failed_application_is_left_to_daphnes_checker_which_logs_it():
    server = _unstarted_server()
    protocol = object()
    server.protocol_connected(protocol)
    server.create_application(protocol, {"fail": True, "wait": False})
    for _ in range(3):
        await asyncio.sleep(0)
    server.protocol_disconnected(protocol)
    assert isinstance(server.connections[protocol]["application_instance"].exception(), RuntimeError)
