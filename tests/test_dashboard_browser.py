"""The dashboard page in a real headless Chromium, against a real daphne with real robots."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import websockets
from django.conf import settings
from django.utils import timezone

from telemetry.robots import create_robot
from tests.servers import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"
FRAME = {"cpu_usage": 10.0, "memory_usage": 20.0, "network_latency_ms": 5.0, "battery_percentage": 90.0}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; installed with apt-get when missing and possible, else the tests skip."""
    if not os.path.exists(CHROMIUM) and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
            shell=True,
            timeout=900,
            capture_output=True,
        )
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed at /usr/bin/chromium and could not be installed (needs root + apt-get)")
    return CHROMIUM


@pytest.fixture
def page(chromium):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        yield page
        browser.close()


class Robot:
    """A robot on a real WebSocket, driven from a background event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, token: str) -> None:
        self.loop = loop
        self.seq = 0
        headers = {"Authorization": f"Bearer {token}"}

        async def connect():
            return await websockets.connect(url, additional_headers=headers)

        self.socket = self._run(connect())

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def send(self, **metrics: float) -> dict:
        self.seq += 1
        frame = {"type": "telemetry", "seq": self.seq, **FRAME, **metrics}

        async def exchange():
            await self.socket.send(json.dumps(frame))
            return json.loads(await self.socket.recv())

        return self._run(exchange())

    def close(self) -> None:
        self._run(self.socket.close())


@pytest.fixture
def event_loop_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def log_in(page, server: ServerProcess) -> None:
    page.goto(f"{server.base_url}/admin/login/?next=/dashboard/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.base_url}/dashboard/")


@pytest.fixture
def tokens(operator) -> dict[str, str]:
    # Database work happens in fixtures, before Playwright's event loop starts in this thread.
    return {robot_id: create_robot(robot_id)[1] for robot_id in ("r2d2", "c3po")}


@pytest.fixture
def counter(admin_user):
    from metrics.models import Counter, CounterSnapshot

    now = timezone.now()
    counter = Counter.objects.create(
        name="mission_status_total", labels={"status": "completed"}, value=60, updated_at=now
    )
    CounterSnapshot.objects.bulk_create(
        CounterSnapshot(counter=counter, value=n, taken_at=now - timezone.timedelta(minutes=60 - n))
        for n in range(1, 61)
    )
    return counter


def test_the_dashboard_shows_robots_live(tokens, tmp_path, event_loop_thread, page):
    from playwright.sync_api import expect

    server = ServerProcess.daphne(tmp_path)
    try:
        log_in(page, server)
        expect(page.locator("#link-state")).to_have_text("live")
        robots = {
            robot_id: Robot(event_loop_thread, f"{server.ws_url}/api/telemetry/ws/{robot_id}", token)
            for robot_id, token in tokens.items()
        }
        for robot in robots.values():
            assert robot.send()["type"] == "ack"

        r2d2 = page.locator('tr[data-robot-id="r2d2"]')
        c3po = page.locator('tr[data-robot-id="c3po"]')
        expect(r2d2).to_be_visible()
        expect(c3po).to_be_visible()

        for cpu in (31.5, 47.0, 63.4):
            assert robots["r2d2"].send(cpu_usage=cpu, battery_percentage=cpu)["type"] == "ack"
            expect(r2d2.locator(".cpu")).to_have_text(f"{cpu:.1f}", timeout=2000)
        expect(r2d2.locator(".battery-value")).to_have_text("63%")
        page.locator('tr[data-robot-id="r2d2"]').click()
        for cpu in (55.0, 56.0, 57.0):
            robots["r2d2"].send(cpu_usage=cpu)
            # Slower than the fan-out intervals, so no frame is coalesced away.
            page.wait_for_timeout(300)
        expect(page.locator("#robot-chart canvas")).to_have_count(1)
        page.wait_for_function("Number(document.querySelector('#robot-chart').dataset.points) >= 2")

        robots["c3po"].close()
        expect(c3po.locator(".status")).to_have_text("not connected", timeout=5000)
        expect(r2d2.locator(".status")).to_have_text("reporting")
        page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
        robots["r2d2"].close()
    finally:
        server.stop()


def test_the_counter_history_chart_renders_in_admin(counter, tmp_path, page):
    server = ServerProcess.daphne(tmp_path)
    try:
        page.goto(f"{server.base_url}/admin/login/?next=/admin/metrics/counter/{counter.pk}/change/")
        page.fill("#id_username", "admin")  # pytest-django's admin_user, a superuser
        page.fill("#id_password", "password")
        page.click("input[type=submit]")
        page.wait_for_url(f"**/admin/metrics/counter/{counter.pk}/change/")
        chart = page.locator("svg.counter-chart")
        chart.wait_for()
        assert chart.bounding_box()["width"] > 200
        assert page.locator("svg.counter-chart polyline").count() >= 1
        page.screenshot(path=str(SCREENSHOTS / "counter-history.png"), full_page=True)
    finally:
        server.stop()


@pytest.fixture
def history_and_alert(tokens, battery_low):
    """Half an hour of r2d2's history (a sample a minute), and c3po's active battery_low alert."""
    from telemetry.models import Alert, Robot, TelemetrySample
    from telemetry.rollups import store_samples

    r2d2, c3po = Robot.objects.get(robot_id="r2d2"), Robot.objects.get(robot_id="c3po")
    now = timezone.now()
    store_samples(
        [
            TelemetrySample(robot=r2d2, reported_at=now - timezone.timedelta(minutes=m), **{**FRAME, "cpu_usage": m})
            for m in range(1, 31)
        ]
    )
    Alert.objects.create(rule=battery_low, robot=c3po, raised_at=now, value=12.0, peak=12.0)


def test_the_dashboard_shows_alerts_and_loads_the_robot_history_on_open(
    history_and_alert, tmp_path, event_loop_thread, page
):
    from channels.layers import get_channel_layer
    from playwright.sync_api import expect

    from fleet.fanout import GROUP
    from fleet.fanout import LAYER as FANOUT_LAYER

    server = ServerProcess.daphne(tmp_path)
    try:
        log_in(page, server)
        expect(page.locator("#link-state")).to_have_text("live")
        c3po, r2d2 = page.locator('tr[data-robot-id="c3po"]'), page.locator('tr[data-robot-id="r2d2"]')
        # From the snapshot: c3po's active alert in its row, and the fleet-wide count.
        expect(c3po.locator(".alert-badge")).to_have_text("battery_low")
        expect(page.locator("#count-alerts")).to_have_text("1")

        r2d2.click()
        page.wait_for_function("document.querySelector('#robot-chart').dataset.history === '30'")
        assert int(page.locator("#robot-chart").get_attribute("data-points")) >= 30

        # Live raises and clears, as the alert evaluation fans them out.
        alert = {"type": "alert", "rule": "cpu_high", "robot_id": "r2d2", "metric": "cpu_usage", "value": 97.0}
        alert |= {"threshold": 90.0, "timestamp": timezone.now().timestamp()}

        def send(group: str, message: dict) -> None:
            # Playwright's loop owns this thread: publish from the robots' loop.
            publish = get_channel_layer(FANOUT_LAYER).group_send(group, message)
            asyncio.run_coroutine_threadsafe(publish, event_loop_thread).result(timeout=10)

        send(GROUP, {"type": "fleet.alerts", "alerts": [{**alert, "state": "raised"}]})
        expect(r2d2.locator(".alert-badge")).to_have_text("cpu_high")
        expect(page.locator("#count-alerts")).to_have_text("2")
        page.screenshot(path=str(SCREENSHOTS / "dashboard-alerts.png"), full_page=True)
        send(GROUP, {"type": "fleet.alerts", "alerts": [{**alert, "state": "cleared", "value": 50.0}]})
        expect(r2d2.locator(".alert-badge")).to_have_count(0)
        expect(page.locator("#count-alerts")).to_have_text("1")
    finally:
        server.stop()


@pytest.fixture
def fleet(operator) -> list[tuple[str, str]]:
    """Six simulated robots' credentials, and a day of mission counts for the chart."""
    from metrics.models import Counter, CounterSnapshot
    from telemetry.management.commands.simulate_fleet import provision, robot_ids

    now = timezone.now()
    for status, per_hour in (("completed", 40), ("failed", 5), ("aborted", 2)):
        counter = Counter.objects.create(
            name="mission_status_total", labels={"status": status}, value=per_hour * 24, updated_at=now
        )
        CounterSnapshot.objects.bulk_create(
            CounterSnapshot(
                counter=counter, value=per_hour * n // 4, taken_at=now - timezone.timedelta(minutes=15 * (24 - n))
            )
            for n in range(1, 25)
        )
    return provision(robot_ids(6, "amr"))


def test_the_dashboard_follows_a_simulated_fleet_and_its_window_width(fleet, tmp_path, page):
    """Also takes the README's screenshot (var/screenshots/dashboard-fleet.png, copied to docs/dashboard.png)."""
    from playwright.sync_api import expect

    from telemetry.simulator import SimulationConfig, simulate

    server = ServerProcess.daphne(tmp_path)
    config = SimulationConfig(url=server.ws_url, rate=2, duration=12, seed=5)
    simulation = threading.Thread(target=lambda: asyncio.run(simulate(config, fleet)), daemon=True)
    try:
        log_in(page, server)
        simulation.start()
        expect(page.locator("#count-reporting")).to_have_text("6", timeout=10_000)
        page.locator('tr[data-robot-id="amr-0003"]').click()
        page.wait_for_function("Number(document.querySelector('#robot-chart').dataset.points) >= 8", timeout=10_000)

        wide = page.locator("#robot-chart canvas").bounding_box()["width"]
        page.set_viewport_size({"width": 1100, "height": 900})
        page.wait_for_function(
            f"document.querySelector('#robot-chart canvas').getBoundingClientRect().width < {wide - 50}"
        )
        page.set_viewport_size({"width": 1400, "height": 900})
        page.wait_for_function(
            f"document.querySelector('#robot-chart canvas').getBoundingClientRect().width > {wide - 5}"
        )
        page.screenshot(path=str(SCREENSHOTS / "dashboard-fleet.png"), full_page=True)
    finally:
        simulation.join(30)
        server.stop()
