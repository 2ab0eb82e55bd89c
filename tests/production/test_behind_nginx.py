"""The service as deployed: through nginx over TLS, two daphnes behind it, debug off."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

import psutil
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, InvalidURI

from fleet_client import ClientEvent, RobotClient
from tests.reliability.fleet import close_code, open_robot, round_trip

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("sessions_written"),
]
FRAME = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


@pytest.fixture(scope="module")
def tls(stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.cert))


def fetch(opener, url: str, data: dict | None = None, headers: dict | None = None):
    """(status, headers, body) of a request that does not follow redirects."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def opener_for(tls: ssl.SSLContext, jar: http.cookiejar.CookieJar | None = None):
    handlers = [urllib.request.HTTPSHandler(context=tls), NoRedirects()]
    if jar is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(jar))
    return urllib.request.build_opener(*handlers)


async def watch_dashboard(stack, tls, token: str, seen: dict[str, int], ready: asyncio.Event, stop: asyncio.Event):
    """A dashboard through nginx: record the latest seq of each robot's frames, acknowledging each sync."""
    url = f"{stack.wss}/api/telemetry/fleet/ws?token={token}"
    async with connect(url, ssl=tls, additional_headers={"Origin": stack.https}, max_size=None) as ws:
        while not stop.is_set():
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
            except TimeoutError:
                continue
            if message["type"] == "snapshot":
                ready.set()
            elif message["type"] == "telemetry":
                seen[message["robot_id"]] = max(seen.get(message["robot_id"], 0), message["seq"])
            elif message["type"] == "sync":
                await ws.send(json.dumps({"type": "ack", "sync": message["sync"]}))


async def test_robots_stream_over_tls_and_a_dashboard_gets_their_frames(stack, robots, operator_token, tls):
    robots = dict(list(robots.items())[:4])
    seen: dict[str, int] = {}
    ready, stop = asyncio.Event(), asyncio.Event()
    dashboard = asyncio.create_task(watch_dashboard(stack, tls, operator_token, seen, ready, stop))
    await asyncio.wait_for(ready.wait(), 10)

    clients = [
        RobotClient(url=stack.wss, robot_id=robot_id, token=token, ssl=tls) for robot_id, token in robots.items()
    ]
    try:
        for client in clients:
            await client.start()
        # One at a time, so each goes out live (a backlog would go as a batch, which dashboards don't get).
        flushed = []
        for _ in range(3):
            for client in clients:
                client.submit(FRAME)
            flushed += await asyncio.gather(*(client.flush(timeout=10) for client in clients))
        for _ in range(50):
            if all(seen.get(robot_id) == 2 for robot_id in robots):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await dashboard
        for client in clients:
            await client.close()

    assert flushed == [True] * 12
    assert {robot_id: seen.get(robot_id) for robot_id in robots} == dict.fromkeys(robots, 2)


async def test_robot_handshakes_that_did_not_come_over_tls_are_refused(stack, robots):
    robot_id, token = next(iter(robots.items()))
    # Straight to a daphne, without the proxy: the token would cross the network in the clear.
    with pytest.raises(InvalidStatus) as direct:
        await open_robot(f"ws://127.0.0.1:{stack.ports['daphne_a']}", robot_id, token)
    # nginx's plain-HTTP server only redirects to https (which the client refuses to follow for a socket).
    with pytest.raises(InvalidURI) as plain:
        await open_robot(f"ws://127.0.0.1:{stack.ports['http']}", robot_id, token)

    assert direct.value.response.status_code == 403
    assert plain.value.uri == f"https://127.0.0.1/api/telemetry/ws/{robot_id}"


def established(port: int, pid: int) -> int:
    """Connections a daphne holds on its port (nginx's, robots' sockets and kept-alive requests alike)."""
    return sum(
        1
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


async def test_a_robot_connecting_again_through_the_other_daphne_closes_its_older_socket_with_4409(stack, robots, tls):
    robot_id, token = list(robots.items())[4]
    daphnes = list(stack.daphnes.values())

    def counts() -> list[int]:
        return [established(daphne.port, daphne.process.pid) for daphne in daphnes]

    before = counts()
    older = await open_robot(stack.wss, robot_id, token, ssl=tls)
    assert (await round_trip(older, 1))[0] == {"type": "ack", "seq": 1}
    after_older = counts()
    first = [n for n in range(2) if after_older[n] > before[n]]
    # nginx balances round-robin: the next handshake goes to the other daphne; a few tries make sure.
    newer, landed = None, None
    for _ in range(4):
        newer = await open_robot(stack.wss, robot_id, token, ssl=tls)
        now = counts()
        landed = [n for n in range(2) if now[n] > after_older[n]]
        if landed != first:
            break
        await newer.close()
        older = newer
        after_older = counts()

    assert len(first) == 1 and len(landed) == 1 and landed != first
    assert await close_code(older) == 4409
    assert (await round_trip(newer, 2))[0] == {"type": "ack", "seq": 2}
    await newer.close()


def test_admin_login_works_over_the_proxied_scheme(stack, operator, tls):
    jar = http.cookiejar.CookieJar()
    opener = opener_for(tls, jar)
    status, _, page = fetch(opener, f"{stack.https}/admin/login/?next=/admin/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    login = f"{stack.https}/admin/login/?next=/admin/"
    posted, headers, _ = fetch(
        opener,
        login,
        {"csrfmiddlewaretoken": token, "username": "olivia", "password": "correct horse", "next": "/admin/"},
        {"Referer": login, "Origin": stack.https},
    )
    admin_status, _, admin_page = fetch(opener, f"{stack.https}/admin/")
    cookies = {cookie.name: cookie.secure for cookie in jar}

    assert status == 200
    assert (posted, headers["Location"]) == (302, "/admin/")
    assert admin_status == 200 and "<title>Administration | Fleet Telemetry</title>" in admin_page
    # Django saw https (from nginx's X-Forwarded-Proto), so the cookies are Secure.
    assert cookies == {"csrftoken": True, "sessionid": True}


def test_static_files_health_and_metrics_through_nginx(stack, tls):
    opener = opener_for(tls)
    static, static_headers, css = fetch(opener, f"{stack.https}/static/admin/css/base.css")
    health = fetch(opener, f"{stack.https}/healthz")
    anonymous = fetch(opener, f"{stack.https}/metrics")
    scraped = fetch(opener, f"{stack.https}/metrics", headers={"Authorization": f"Bearer {stack.metrics_token}"})

    # Served by nginx from STATIC_ROOT, with its caching headers.
    assert (static, "max-age=2592000" in static_headers.get_all("Cache-Control")) == (200, True)
    assert "body" in css
    assert (health[0], json.loads(health[2])) == (200, {"status": "ok", "database": "ok", "redis": "ok"})
    assert anonymous[0] == 401
    assert scraped[0] == 200 and "fleet_robots_connected" in scraped[2]


async def test_a_rolling_restart_loses_no_frame_and_the_robots_are_back_within_seconds(stack, robots, tls):
    heard: dict[str, list[ClientEvent]] = {robot_id: [] for robot_id in robots}
    clients = [
        RobotClient(url=stack.wss, robot_id=robot_id, token=token, ssl=tls, on_event=heard[robot_id].append)
        for robot_id, token in robots.items()
    ]
    for client in clients:
        await client.start()
    stop = asyncio.Event()

    async def stream(client: RobotClient) -> None:
        while not stop.is_set():
            client.submit(FRAME)
            await asyncio.sleep(0.1)  # 10 Hz

    streaming = [asyncio.create_task(stream(client)) for client in clients]
    try:
        await asyncio.sleep(1.0)
        exits = []
        for name in ("daphne_a", "daphne_b"):
            # One at a time, as docs/deploy.md says: systemctl restart fleet-daphne@8001, then @8002.
            exits.append(await asyncio.to_thread(stack.stop_daphne, name))
            await asyncio.to_thread(stack.start_daphne, name)
            await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*streaming)
        started = time.monotonic()
        flushed = await asyncio.gather(*(client.flush(timeout=10) for client in clients))
        flush_took = time.monotonic() - started
        stats = {client.robot_id: client.stats for client in clients}
    finally:
        for client in clients:
            await client.close()
    # A live frame's history row is written just after its ack (docs/websocket.md, delivery semantics).
    for _ in range(50):
        stored = await database_sync_to_async(stored_seqs)(list(robots))
        if all(set(range(s["submitted"])) <= stored[robot_id] for robot_id, s in stats.items()):
            break
        await asyncio.sleep(0.1)

    assert exits == [0, 0]
    # Every robot's frames were all acked within seconds of the second restart, none dropped or refused ...
    assert flushed == [True] * len(clients) and flush_took < 10
    assert all(
        s["acked"] == s["submitted"] >= 20 and (s["dropped"], s["rejected"], s["buffered"]) == (0, 0, 0)
        for s in stats.values()
    ), stats
    # ... every robot was cut off and came back (1001 from the stopping daphne, then a new socket) ...
    assert all(
        (ClientEvent("disconnected", code=1001, reason="server_shutdown") in events)
        and stats[robot_id]["reconnects"] >= 1
        for robot_id, events in heard.items()
    ), heard
    # ... and every frame is in the database (seqs count from 0).
    assert {robot_id: sorted(set(range(s["submitted"])) - stored[robot_id]) for robot_id, s in stats.items()} == {
        robot_id: [] for robot_id in stats
    }


def stored_seqs(robot_ids: list[str]) -> dict[str, set[int]]:
    from telemetry.models import TelemetrySample

    stored: dict[str, set[int]] = {robot_id: set() for robot_id in robot_ids}
    for robot_id, seq in TelemetrySample.objects.filter(robot__robot_id__in=robot_ids).values_list(
        "robot__robot_id", "seq"
    ):
        stored[robot_id].add(seq)
    return stored
