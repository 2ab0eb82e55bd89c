"""The service as deployed: through nginx over TLS, two daphnes behind it, debug off."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

import psutil
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, InvalidURI

from tests.production.reconnecting_robot import ReconnectingRobot
from tests.reliability.fleet import close_code, open_robot, round_trip

pytestmark = [pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]


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

    sockets = {robot_id: await open_robot(stack.wss, robot_id, token, ssl=tls) for robot_id, token in robots.items()}
    replies = [(await round_trip(ws, seq))[0] for seq in (1, 2, 3) for ws in sockets.values()]
    assert replies == [{"type": "ack", "seq": seq} for seq in (1, 2, 3) for _ in sockets]
    for _ in range(50):
        if all(seen.get(robot_id) == 3 for robot_id in robots):
            break
        await asyncio.sleep(0.1)
    stop.set()
    await dashboard
    for ws in sockets.values():
        await ws.close()

    assert {robot_id: seen.get(robot_id) for robot_id in robots} == dict.fromkeys(robots, 3)


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


async def test_a_rolling_restart_loses_no_acknowledged_frame(stack, robots, tls):
    robots = [ReconnectingRobot(stack.wss, robot_id, token, tls, rate=10) for robot_id, token in robots.items()]
    stop = asyncio.Event()
    streaming = [asyncio.create_task(robot.run(stop)) for robot in robots]
    await asyncio.sleep(1.0)
    exits = []
    for name in ("daphne_a", "daphne_b"):
        # One at a time, as docs/deploy.md says: systemctl restart fleet-daphne@8001, then @8002.
        exits.append(await asyncio.to_thread(stack.stop_daphne, name))
        await asyncio.to_thread(stack.start_daphne, name)
        await asyncio.sleep(1.0)
    await asyncio.sleep(1.0)  # and streaming on both again
    stop.set()
    await asyncio.wait_for(asyncio.gather(*streaming), 60)

    stored = await database_sync_to_async(stored_seqs)([robot.robot_id for robot in robots])
    acked = {robot.robot_id: robot.acked for robot in robots}

    assert exits == [0, 0]
    # Each robot's frames were acknowledged 1, 2, 3, ... without a gap, across both restarts (at 10 Hz,
    # less the time each robot spent reconnecting) ...
    assert all(seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 20 for seqs in acked.values()), {
        robot_id: (len(seqs), seqs[:3], seqs[-3:]) for robot_id, seqs in acked.items()
    }
    # ... every robot was cut off and came back (1001 from the stopping daphne, then a new socket) ...
    assert all(robot.connects >= 2 and 1001 in robot.close_codes for robot in robots)
    # ... and every acknowledged frame is in the database.
    assert {robot_id: sorted(set(seqs) - stored[robot_id]) for robot_id, seqs in acked.items()} == {
        robot_id: [] for robot_id in acked
    }


def stored_seqs(robot_ids: list[str]) -> dict[str, set[int]]:
    from telemetry.models import TelemetrySample

    stored: dict[str, set[int]] = {robot_id: set() for robot_id in robot_ids}
    for robot_id, seq in TelemetrySample.objects.filter(robot__robot_id__in=robot_ids).values_list(
        "robot__robot_id", "seq"
    ):
        stored[robot_id].add(seq)
    return stored
