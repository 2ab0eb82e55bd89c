from __future__ import annotations

import pytest
from django.test import override_settings

from fleet.redis import reset_clients

pytestmark = pytest.mark.django_db


def test_it_reports_ok_when_database_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_it_names_redis_when_redis_is_unreachable(client, tmp_path):
    with override_settings(REDIS_URL=f"unix://{tmp_path}/nothing.sock"):
        reset_clients()
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["database"] == "ok"
    assert body["redis"].startswith("error: ")
    assert "No such file or directory" in body["redis"]
