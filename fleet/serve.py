"""Run daphne with Fleet's defaults: `python -m fleet.serve [-b HOST] [-p PORT] [daphne options]`.

It differs from plain `daphne fleet.asgi:application` in ten ways:
- WebSocket limits and timeouts come from settings (see default_arguments below);
- on SIGTERM/SIGINT, fleet.shutdown hooks run first, so robots get a clean 1001 and their
  `connection_closed` events are flushed, before daphne cancels what is left;
- the app can close sockets with any code (1001, 1008, 1009 included), a message over the size
  limit gets a 1009 close frame instead of a dropped connection, and the limit applies only to
  what clients send, not to what the server sends;
- a closed connection is forgotten as soon as its application returns, not up to a second later,
  so its objects die young instead of piling up for a long collector pause;
- it listens with a backlog of LISTEN_BACKLOG, not Twisted's 50, so a burst of handshakes is
  queued by the kernel instead of dropped (the client's TCP would retry only after a second);
- once listening, the start-up heap is frozen (gc.freeze) and the collector runs less often
  (GC_THRESHOLDS), which cuts GC pauses from the tail;
- daphne's periodic timeout and keep-alive check is spread out instead of visiting every
  connection at once;
- the telemetry process loop runs from the start, robots connected or not, so the fleet-wide
  alert rules (`not_reporting`) are evaluated even when every robot has gone;
- the per-frame path is leaner (fleet.daphne_protocol): sends go straight to the socket when
  nothing is queued, debug-log arguments are not built while debug is off, and client frames are
  unmasked by wsaccel; the reactor dispatches socket events without building a log context.
- daphne's access log goes through Python logging (fleet.logs.AccessLog), so it is JSON with
  DJANGO_LOG_FORMAT=json, like every other line;
- what one socket can make the process hold is bounded (1013 past 64 unprocessed messages or
  1 MiB of unread replies), and only a pong answers a ping (fleet.socket_bounds).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys

from daphne import cli as daphne_cli
from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import asyncioreactor, defer, reactor
from twisted.python import log as twisted_log

from fleet.daphne_protocol import FleetWebSocketProtocol, install_fast_unmasking, install_quiet_option_dump
from fleet.logs import AccessLog
from fleet.socket_bounds import BoundedProtocol, ping_timings

# CPython's defaults (700, 10, 10) run a young collection every 700 net allocations, so objects
# that live a few hundred milliseconds (frames awaiting a flush, events awaiting the publisher)
# get promoted, and the oldest generation fills and is scanned every few seconds under load: a
# pause of 100-250 ms with 1,000 sockets open. Fewer young collections let those objects die young,
# and full collections become rare (and still bounded by the 25%-growth rule).
GC_THRESHOLDS = (20_000, 20, 100)

TIMEOUT_CHECK_PERIOD = 2.0  # daphne's
TIMEOUT_CHECK_SLICES = 20
SHUTDOWN_TIMEOUT = 8.0
# After a server-initiated close frame, how long a client has to answer before the TCP connection is
# aborted (RST). autobahn's default of 1 s is shorter than a busy or distant robot may need to read the
# handshake reply, an error and the close: the RST then discards all of it unread, and a robot turned away
# with 4429 only sees its connection die, without the retry_after it needs.
CLOSE_HANDSHAKE_TIMEOUT = 5.0
# Twisted listens with a backlog of 50. A reconnect storm or a flood of bogus handshakes fills that
# between two turns of the event loop, and the kernel then drops SYNs: the robot's TCP retries after
# a full second, which is what a robot's handshake p99 measured. The kernel caps it at somaxconn.
LISTEN_BACKLOG = 4096


class BoundedFleetProtocol(BoundedProtocol, FleetWebSocketProtocol):
    """The protocol the server runs: Fleet's, with what one socket may hold bounded (fleet.socket_bounds)."""


class FleetServer(Server):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.endpoints = [with_backlog(description) for description in self.endpoints]
        self._to_check: list = []
        self._checked = 0

    def timeout_checker(self):
        """daphne's timeout and keep-alive check, spread over its period in TIMEOUT_CHECK_SLICES steps.

        daphne checks every connection at once every 2 s: with 10,000 robots connected that is one
        stall of about 90 ms, which every socket's next frame waits for.
        """
        if self._checked >= len(self._to_check):
            self._to_check, self._checked = list(self.connections), 0
        end = self._checked + len(self._to_check) // TIMEOUT_CHECK_SLICES + 1
        for protocol in self._to_check[self._checked : end]:
            if protocol in self.connections:  # not closed since the list was taken
                protocol.check_timeouts()
        self._checked = end
        reactor.callLater(TIMEOUT_CHECK_PERIOD / TIMEOUT_CHECK_SLICES, self.timeout_checker)

    def create_application(self, protocol, scope):
        queue = super().create_application(protocol, scope)
        instance = self.connections.get(protocol, {}).get("application_instance")
        if instance is not None:
            instance.add_done_callback(lambda _: self._reap(protocol))
        return queue

    def protocol_disconnected(self, protocol):
        # daphne calls this twice for some connections (a rejected socket, then its close; a finished
        # request, then its lost connection): the first may already have reaped it.
        if protocol not in self.connections:
            return
        super().protocol_disconnected(protocol)
        self._reap(protocol)

    def _reap(self, protocol) -> None:
        """Forget a connection as soon as it is closed and its application has returned cleanly.

        daphne's application_checker does it once a second. Every connection's objects form reference
        cycles, so those that outlive a young collection wait for an older one: under 500 refused
        handshakes a second that was ~190,000 objects and a 430 ms pause every ~12 s. Reaped at once
        they die young and cheaply. A failed or cancelled application is left to daphne's checker,
        which logs it.
        """
        details = self.connections.get(protocol)
        if details is None or "disconnected" not in details:
            return
        instance = details.get("application_instance")
        if instance is not None and (not instance.done() or instance.cancelled() or instance.exception()):
            return
        del self.connections[protocol]

    def listen_success(self, port):
        super().listen_success(port)
        # Listening is set up before the reactor runs, so no connection exists yet.
        self.ws_factory.protocol = BoundedFleetProtocol
        install_fast_unmasking()
        install_quiet_option_dump()
        # autobahn's server default drops the TCP connection on a protocol failure, so a robot
        # that sends a message over the size limit would see 1006; send the close frame (1009).
        # Only a pong answers a ping (fleet.socket_bounds): incoming data no longer cancels its timeout.
        self.ws_factory.setProtocolOptions(
            failByDrop=False, closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT, autoPingRestartOnAnyTraffic=False
        )
        BoundedFleetProtocol.configure()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        # Once the reactor (and its asyncio loop) runs: the fleet-wide alert rules need a loop
        # in every server process, robots connected or not.
        reactor.callLater(0, _run_resident)

    def kill_all_applications(self):
        hooks = defer.Deferred.fromFuture(asyncio.ensure_future(_shut_down_gracefully()))
        hooks.addErrback(lambda failure: None)
        hooks.addCallback(lambda _: Server.kill_all_applications(self))
        return hooks


def with_backlog(description: str) -> str:
    """A tcp: or unix: endpoint description with LISTEN_BACKLOG, unless it names a backlog itself."""
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "unix") or ":backlog=" in description:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


def dispatch_socket_event(selectable, method, *args):
    """Twisted's callWithLogger without the log context it builds for every socket event.

    The asyncio reactor wraps each read and write callback in callWithLogger, which copies two
    dicts and pushes a context (~2 µs, 3-4% of the robot route's CPU) only to tag legacy log
    lines with the connection's prefix. The reactor's own _readOrWrite already logs an exception
    and drops the connection; what it lets through is still logged here, as callWithLogger does.
    """
    try:
        return method(*args)
    except KeyboardInterrupt:
        raise
    except BaseException:
        twisted_log.err()


def _run_resident() -> None:
    from telemetry.connections import run_resident

    run_resident()


async def _shut_down_gracefully() -> None:
    """Let the apps close their sockets cleanly, then flush the events that produced."""
    from fleet import shutdown
    from fleet.events.stream import get_publisher

    await shutdown.run_hooks(SHUTDOWN_TIMEOUT)
    await asyncio.get_running_loop().run_in_executor(None, get_publisher().flush)


class FleetCommandLineInterface(CommandLineInterface):
    server_class = FleetServer


def default_arguments() -> list[str]:
    from django.conf import settings

    max_bytes = str(settings.TELEMETRY_MAX_MESSAGE_BYTES)
    ping_interval, ping_timeout = ping_timings(settings.TELEMETRY_IDLE_TIMEOUT)
    return [
        # Robots stay connected for weeks: daphne's default (86400 s) would cut them all daily.
        "--websocket_timeout", "-1",
        # Never hold more than one message's worth per socket in memory; larger ones close 1009.
        "--websocket-max-message-size", max_bytes,
        "--websocket-max-frame-size", max_bytes,
        # A peer that answers no ping is dropped well within TELEMETRY_IDLE_TIMEOUT.
        "--ping-interval", str(ping_interval),
        "--ping-timeout", str(ping_timeout),
        "--application-close-timeout", "10",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    # Read when each socket is registered with the reactor (AsyncioSelectorReactor.addReader/addWriter).
    asyncioreactor.callWithLogger = dispatch_socket_event
    # Read when the command line builds its access log (CommandLineInterface.run).
    daphne_cli.AccessLogGenerator = AccessLog
    args = default_arguments() + list(sys.argv[1:] if argv is None else argv)
    if not any(arg.endswith(":application") for arg in args):
        args.append("fleet.asgi:application")
    FleetCommandLineInterface().run(args)


if __name__ == "__main__":
    main()
