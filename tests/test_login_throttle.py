"""Login attempts are limited per client address (LOGIN_THROTTLE), on the admin and the browsable API."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import override_settings

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counts():
    cache.clear()
    yield
    cache.clear()


def attempt(client, path: str, address: str, password: str = "wrong"):
    return client.post(path, {"username": "olivia", "password": password}, REMOTE_ADDR=address)


@override_settings(LOGIN_THROTTLE="3/minute")
@pytest.mark.parametrize("path", ["/admin/login/", "/api/auth/login/"])
def test_the_attempt_after_the_limit_gets_429_with_retry_after(client, operator, path):
    statuses = [attempt(client, path, "198.51.100.1").status_code for _ in range(3)]
    refused = attempt(client, path, "198.51.100.1", password="correct horse")

    assert statuses == [200, 200, 200]  # the form again, with its error
    assert refused.status_code == 429
    wait = int(refused["Retry-After"])
    assert 0 < wait <= 60  # the minute, less the time the attempts took (password hashing is slow)
    assert refused.content == f"429 Too Many Requests: too many login attempts; try again in {wait} s\n".encode()


@override_settings(LOGIN_THROTTLE="2/minute")
def test_each_client_address_has_its_own_count(client, operator):
    for _ in range(2):
        attempt(client, "/admin/login/", "198.51.100.1")

    assert attempt(client, "/admin/login/", "198.51.100.1").status_code == 429
    assert attempt(client, "/admin/login/", "198.51.100.2", password="correct horse").status_code == 302


@override_settings(LOGIN_THROTTLE="1/minute")
def test_showing_the_login_form_is_not_counted(client):
    assert [client.get("/admin/login/").status_code for _ in range(3)] == [200, 200, 200]
