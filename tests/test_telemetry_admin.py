"""Robot admin: live state, token rotation, revocation over the real channel layer, read-only history."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from datetime import UTC, datetime

import pytest
import websockets
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from django.contrib.auth.models import Permission
from django.db import connections
from django.test import override_settings

from fleet.redis import reset_clients
from telemetry import presence
from telemetry.models import Robot, RobotSession, TelemetrySample
from telemetry.robots import authenticate, create_robot, revoke_robots
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/telemetry/robot/"
TOKEN = re.compile(r"New token for robot (\S+)\. Store it now: it is shown only once\. (\S+)")


@pytest.fixture
def admin(client, operator):
    """Olivia, signed in to admin with the telemetry permissions an operator is given."""
    operator.user_permissions.set(Permission.objects.filter(content_type__app_label="telemetry"))
    client.force_login(operator)
    return client


@pytest.fixture
def bb8():
    robot, _ = create_robot("bb8", name="Rolling")
    return robot


def connect(redis_client, robot_id: str, connection_id: str) -> None:
    pipe = redis_client.pipeline(transaction=False)
    presence.refresh_leases(pipe, [(connection_id, robot_id)])
    pipe.execute()


def mark_reporting(redis_client, robot_id: str) -> None:
    pipe = redis_client.pipeline(transaction=False)
    presence.mark_reporting(pipe, {robot_id: datetime.now(UTC).timestamp()})
    pipe.execute()


class Listener:
    """A real channel on a real channel layer (channels-redis on the test Redis), added to a group.

    It lives on one event loop of its own: channels-redis binds a channel's receive buffer to a loop.
    """

    def __init__(self, group: str) -> None:
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.channel = self._run(self.layer.new_channel())
        self._run(self.layer.group_add(group, self.channel))

    def _run(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def receive(self, timeout: float = 5.0) -> dict:
        """The next message, or TimeoutError."""

        async def _receive() -> dict:
            async with asyncio.timeout(timeout):
                return await self.layer.receive(self.channel)

        return self._run(_receive(), timeout + 5)

    def close(self) -> None:
        self._run(self.layer.flush())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def listen():
    """listen(group) -> a Listener on that group, closed after the test."""
    listeners: list[Listener] = []

    def _listen(group: str) -> Listener:
        listeners.append(Listener(group))
        return listeners[-1]

    yield _listen
    for listener in listeners:
        listener.close()


def tokens_shown(response) -> dict[str, str]:
    found = [TOKEN.search(str(message)) for message in response.context["messages"]]
    return dict(match.groups() for match in found if match)


def test_the_changelist_shows_connected_and_reporting_from_presence(admin, redis_client, r2d2, bb8):
    connect(redis_client, "r2d2", "ws_r2d2_1_aaaa")
    mark_reporting(redis_client, "r2d2")

    response = admin.get(CHANGELIST)

    assert response.status_code == 200
    content = response.content.decode()
    for column in ("robot_id", "name", "is_active", "connected", "reporting", "last_seen_at"):
        assert f"column-{column}" in content  # sortable columns carry more classes: "sortable column-…"
    rows = {robot.robot_id: robot._presence for robot in response.context["cl"].result_list}
    assert rows == {"bb8": {"connected": False, "reporting": False}, "r2d2": {"connected": True, "reporting": True}}
    # is_active of both, connected and reporting of r2d2; connected and reporting of bb8.
    assert content.count('alt="True"') == 4
    assert content.count('alt="False"') == 2


def test_the_changelist_shows_unknown_live_state_when_redis_is_down(admin, r2d2):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        reset_clients()
        response = admin.get(CHANGELIST)
    reset_clients()

    assert response.status_code == 200
    assert response.content.decode().count('alt="None"') == 2


def test_the_change_page_shows_the_robot_read_only_state_and_recent_sessions(admin, redis_client, r2d2):
    connect(redis_client, "r2d2", "ws_r2d2_1_aaaa")
    RobotSession.objects.create(
        connection_id="ws_r2d2_1_aaaa",
        robot=r2d2,
        connected_at=datetime(2026, 11, 1, tzinfo=UTC),
        disconnected_at=datetime(2026, 11, 1, 0, 5, tzinfo=UTC),
        reason="client_disconnect",
        close_code=1000,
        frames_accepted=42,
    )

    response = admin.get(f"{CHANGELIST}{r2d2.pk}/change/")

    assert response.status_code == 200
    content = response.content.decode()
    assert "ws_r2d2_1_aaaa" in content
    assert "client_disconnect" in content
    assert "All 1 sessions" in content
    assert 'name="robot_id"' not in content  # the identity is read-only
    assert 'name="name"' in content
    assert r2d2.token_hash not in content


def test_saving_the_change_page_keeps_its_sessions(admin, r2d2):
    RobotSession.objects.create(connection_id="ws_r2d2_1_aaaa", robot=r2d2, connected_at=datetime.now(UTC))
    prefix = "sessions"

    response = admin.post(
        f"{CHANGELIST}{r2d2.pk}/change/",
        {
            "name": "Renamed",
            "is_active": "on",
            f"{prefix}-TOTAL_FORMS": "1",
            f"{prefix}-INITIAL_FORMS": "1",
            f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "0",
            f"{prefix}-0-id": str(RobotSession.objects.get().pk),
            f"{prefix}-0-robot": str(r2d2.pk),
        },
    )

    assert response.status_code == 302, response.context["errors"] if response.context else response
    assert Robot.objects.get(pk=r2d2.pk).name == "Renamed"
    assert RobotSession.objects.count() == 1


def test_adding_a_robot_in_admin_shows_its_token_once(admin):
    response = admin.post(
        f"{CHANGELIST}add/",
        {
            "robot_id": "c3po",
            "name": "Protocol droid",
            "is_active": "on",
            "sessions-TOTAL_FORMS": "0",
            "sessions-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    assert response.status_code == 200
    shown = tokens_shown(response)
    assert list(shown) == ["c3po"]
    assert authenticate("c3po", shown["c3po"]) == Robot.objects.get(robot_id="c3po")
    assert shown["c3po"] not in admin.get(CHANGELIST).content.decode()


def test_rotate_action_shows_each_new_token_once_and_the_old_ones_stop_working(admin, r2d2, bb8):
    response = admin.post(
        CHANGELIST,
        {"action": "rotate_tokens", "_selected_action": [r2d2.pk, bb8.pk]},
        follow=True,
    )

    assert response.status_code == 200
    shown = tokens_shown(response)
    assert sorted(shown) == ["bb8", "r2d2"]
    assert authenticate("r2d2", r2d2.token) is None
    assert authenticate("r2d2", shown["r2d2"]).robot_id == "r2d2"
    assert authenticate("bb8", shown["bb8"]).robot_id == "bb8"
    assert Robot.objects.get(robot_id="r2d2").is_active is True


def test_revoke_action_deactivates_and_tells_the_live_session_to_close(
    admin, r2d2, bb8, listen, django_capture_on_commit_callbacks
):
    channel = listen("robot.r2d2")
    other = listen("robot.bb8")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin.post(CHANGELIST, {"action": "revoke_robots", "_selected_action": [r2d2.pk]}, follow=True)

    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == [
        "Revoked 1 robot(s); their live sessions are being closed (4403)."
    ]
    assert len(callbacks) == 1
    assert channel.receive() == {"type": "robot.revoke"}
    assert Robot.objects.get(robot_id="r2d2").is_active is False
    assert Robot.objects.get(robot_id="bb8").is_active is True
    assert authenticate("r2d2", r2d2.token) is None
    with pytest.raises(TimeoutError):
        other.receive(timeout=0.3)


def test_revoke_sends_nothing_until_the_transaction_commits(admin, r2d2, listen, django_capture_on_commit_callbacks):
    channel = listen("robot.r2d2")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        admin.post(CHANGELIST, {"action": "revoke_robots", "_selected_action": [r2d2.pk]})

    with pytest.raises(TimeoutError):
        channel.receive(timeout=0.3)
    callbacks[0]()
    assert channel.receive() == {"type": "robot.revoke"}


def test_unticking_active_on_the_change_page_also_closes_the_live_session(
    admin, r2d2, listen, django_capture_on_commit_callbacks
):
    channel = listen("robot.r2d2")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            f"{CHANGELIST}{r2d2.pk}/change/",
            {"name": "Astromech", "sessions-TOTAL_FORMS": "0", "sessions-INITIAL_FORMS": "0"},
        )

    assert response.status_code == 302
    assert Robot.objects.get(robot_id="r2d2").is_active is False
    assert channel.receive() == {"type": "robot.revoke"}


def test_deleting_a_robot_closes_its_live_session(admin, r2d2, listen, django_capture_on_commit_callbacks):
    channel = listen("robot.r2d2")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(f"{CHANGELIST}{r2d2.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Robot.objects.filter(robot_id="r2d2").exists()
    assert channel.receive() == {"type": "robot.revoke"}


def test_sessions_are_visible_and_read_only(admin, r2d2):
    session = RobotSession.objects.create(
        connection_id="ws_r2d2_1_aaaa", robot=r2d2, connected_at=datetime.now(UTC), reason="replaced", close_code=4409
    )

    assert admin.get("/admin/telemetry/robotsession/").status_code == 200
    change = admin.get(f"/admin/telemetry/robotsession/{session.pk}/change/")
    assert change.status_code == 200
    assert 'name="reason"' not in change.content.decode()
    assert admin.get("/admin/telemetry/robotsession/add/").status_code == 403
    assert admin.post(f"/admin/telemetry/robotsession/{session.pk}/delete/", {"post": "yes"}).status_code == 403


def test_telemetry_samples_are_visible_and_read_only(admin, r2d2):
    sample = TelemetrySample.objects.create(
        robot=r2d2,
        reported_at=datetime(2026, 11, 1, tzinfo=UTC),
        seq=7,
        cpu_usage=45.2,
        memory_usage=62.8,
        network_latency_ms=12.5,
        battery_percentage=78.0,
    )

    changelist = admin.get("/admin/telemetry/telemetrysample/")
    assert changelist.status_code == 200
    assert "45.2" in changelist.content.decode()
    change = admin.get(f"/admin/telemetry/telemetrysample/{sample.pk}/change/")
    assert change.status_code == 200
    assert "r2d2 @ 2026-11-01 00:00:00" in change.content.decode()
    assert 'name="cpu_usage"' not in change.content.decode()
    assert admin.get("/admin/telemetry/telemetrysample/add/").status_code == 403


@pytest.mark.e2e
def test_revoking_a_connected_robot_closes_its_socket_with_4403_within_5_seconds(transactional_db, tmp_path):
    _, token = create_robot("r2d2")
    server = ServerProcess.daphne(tmp_path)
    url = f"{server.ws_url}/api/telemetry/ws/r2d2"
    headers = {"Authorization": f"Bearer {token}"}

    def revoke() -> None:
        try:
            revoke_robots(["r2d2"])
        finally:
            connections.close_all()

    async def scenario() -> tuple[int, float, int]:
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.send(json.dumps({"type": "ping"}))
            assert json.loads(await socket.recv())["type"] == "pong"  # connected and in its group
            started = time.monotonic()
            await asyncio.to_thread(revoke)
            async with asyncio.timeout(5):
                with pytest.raises(websockets.ConnectionClosed):
                    while True:
                        await socket.recv()
            elapsed = time.monotonic() - started
            code = socket.close_code
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers)
        return code, elapsed, refused.value.response.status_code

    try:
        code, elapsed, reconnect_status = asyncio.run(scenario())
    finally:
        server.stop()

    assert code == 4403
    assert elapsed < 5.0
    assert reconnect_status == 403


def test_a_revocation_commits_even_when_the_channel_layer_is_down(r2d2, caplog, django_capture_on_commit_callbacks):
    down = {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}"]},
    }

    with override_settings(CHANNEL_LAYERS={"default": down}):
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            assert revoke_robots(["r2d2"]) == 1
        elapsed = time.monotonic() - started

    assert Robot.objects.get(robot_id="r2d2").is_active is False
    assert elapsed < 3.0
    assert "could not notify the live sessions of revoked robots r2d2" in caplog.text
