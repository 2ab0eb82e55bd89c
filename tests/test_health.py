from __future__ import annotations

import pytest
from django.test import override_settings

from fleet.redis import reset_clients

pytestmark = pytest.mark.django_db


def test_it_reports_ok_when_database_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_it_names_redis_when_redis_is_unreachable_and_logs_why_without_telling_the_caller(client, tmp_path, caplog):
    with override_settings(REDIS_URL=f"unix://{tmp_path}/nothing.sock"):
        reset_clients()
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "redis": "error"}
    warnings = [record.getMessage() for record in caplog.records if record.name == "fleet.health"]
    assert len(warnings) == 1
    assert warnings[0].startswith("health check: redis is failing: ConnectionError: ")
    assert f"{tmp_path}/nothing.sock. No such file or directory" in warnings[0]
