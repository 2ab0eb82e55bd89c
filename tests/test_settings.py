"""Bad configuration stops start-up with a message that names the variable."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

from tests.servers import BASE_DIR, child_env


def load_settings(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; settings.DATABASES"],
        cwd=BASE_DIR,
        env=child_env(DJANGO_SETTINGS_MODULE="fleet.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be one of"),
        ({"DATABASE_URL": "nonsense://"}, "DATABASE_URL is not a database URL"),
        ({"REDIS_URL": "http://example"}, "REDIS_URL must start with redis://"),
        ({"TELEMETRY_IDLE_TIMEOUT": "soon"}, "TELEMETRY_IDLE_TIMEOUT must be a number"),
        ({"FLEET_EVENT_BUFFER": "-5"}, "FLEET_EVENT_BUFFER must be at least 1"),
        ({"TELEMETRY_PUBLISH_ON_INGEST": "sometimes"}, "TELEMETRY_PUBLISH_ON_INGEST must be one of"),
        ({"TELEMETRY_PUBLISH_MIN_INTERVAL": "-1"}, "TELEMETRY_PUBLISH_MIN_INTERVAL must be a finite number"),
        ({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_LOG_FORMAT": "xml"}, "DJANGO_LOG_FORMAT must be plain or json"),
    ],
)
def test_it_refuses_bad_values_naming_the_variable(env, message):
    result = load_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_it_loads_with_production_variables():
    result = load_settings(DJANGO_DEBUG="0", DJANGO_SECRET_KEY="x" * 60, DJANGO_ALLOWED_HOSTS="fleet.example.com")
    assert result.returncode == 0, result.stderr


def test_check_deploy_only_reports_the_documented_preload_warning():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=child_env(
            DJANGO_DEBUG="0", DJANGO_SECRET_KEY=secrets.token_urlsafe(60), DJANGO_ALLOWED_HOSTS="fleet.example.com"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    warnings = [line for line in result.stderr.splitlines() if line.startswith("?:") or ": (" in line]
    # W021 (HSTS preload) is opt-in on purpose: see docs/deploy.md.
    assert [line.split(")")[0] + ")" for line in warnings] == ["?: (security.W021)"]
