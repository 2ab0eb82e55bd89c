"""Bad configuration stops start-up with a message that names the variable."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

from tests.servers import BASE_DIR, child_env


def load_settings(*names: str, **env: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh process with `env`; print the settings `names` as repr lines."""
    shown = "; ".join(f"print(repr(settings.{name}))" for name in names) or "settings.DATABASES"
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; {shown}"],
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
        ({"FLEET_STREAMS_REDIS_URL": "http://example"}, "FLEET_STREAMS_REDIS_URL must start with redis://"),
        ({"TELEMETRY_IDLE_TIMEOUT": "soon"}, "TELEMETRY_IDLE_TIMEOUT must be a number"),
        ({"FLEET_EVENT_BUFFER": "-5"}, "FLEET_EVENT_BUFFER must be at least 1"),
        ({"TELEMETRY_PUBLISH_ON_INGEST": "sometimes"}, "TELEMETRY_PUBLISH_ON_INGEST must be one of"),
        ({"TELEMETRY_PUBLISH_MIN_INTERVAL": "-1"}, "TELEMETRY_PUBLISH_MIN_INTERVAL must be a finite number"),
        ({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_DEBUG": None, "DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off"),
        ({"FLEET_TRUSTED_PROXIES": "nginx.local"}, "FLEET_TRUSTED_PROXIES must be a count or"),
        ({"DASHBOARD_ALLOWED_ORIGINS": "*"}, "DASHBOARD_ALLOWED_ORIGINS must list exact origins"),
        ({"DASHBOARD_ALLOWED_ORIGINS": "https://.example.com"}, "DASHBOARD_ALLOWED_ORIGINS must list exact origins"),
        ({"DASHBOARD_ALLOWED_ORIGINS": "fleet.example.com"}, "DASHBOARD_ALLOWED_ORIGINS must list exact origins"),
        ({"METRICS_ALLOW_ANONYMOUS": "sure"}, "METRICS_ALLOW_ANONYMOUS must be one of"),
        ({"ROBOTS_REQUIRE_TLS": "sure"}, "ROBOTS_REQUIRE_TLS must be one of"),
        ({"CHANNELS_REDIS_URLS": "redis://a:6379,http://b"}, "CHANNELS_REDIS_URLS must list redis://"),
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


PRODUCTION = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 60}


def test_debug_is_off_unless_asked_for():
    result = load_settings("DEBUG", DJANGO_DEBUG=None, DJANGO_SECRET_KEY="x" * 60)
    assert result.stdout.splitlines() == ["False"], result.stderr


def test_fleet_serve_refuses_to_start_without_a_secret_key_naming_it():
    result = subprocess.run(
        [sys.executable, "-m", "fleet.serve", "--port", "0"],
        cwd=BASE_DIR,
        env=child_env(DJANGO_DEBUG=None, DJANGO_SECRET_KEY=None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr


def test_production_defaults_close_metrics_require_tls_and_trust_no_proxy():
    result = load_settings(
        "METRICS_ALLOW_ANONYMOUS", "ROBOTS_REQUIRE_TLS", "FLEET_TRUSTED_PROXIES", "LOGIN_THROTTLE", **PRODUCTION
    )
    assert result.stdout.splitlines() == ["False", "True", "0", "'10/minute'"], result.stderr


def test_debug_defaults_open_metrics_and_allow_plain_robot_sockets():
    result = load_settings("METRICS_ALLOW_ANONYMOUS", "ROBOTS_REQUIRE_TLS", DJANGO_DEBUG="1")
    assert result.stdout.splitlines() == ["True", "False"], result.stderr


def test_trusted_proxies_are_a_count_or_a_list_of_networks():
    count = load_settings("FLEET_TRUSTED_PROXIES", **PRODUCTION, FLEET_TRUSTED_PROXIES="2")
    listed = load_settings("FLEET_TRUSTED_PROXIES", **PRODUCTION, FLEET_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8,::1")
    older = load_settings("FLEET_TRUSTED_PROXIES", **PRODUCTION, DJANGO_BEHIND_PROXY="1")
    assert count.stdout.splitlines() == ["2"], count.stderr
    assert listed.stdout.splitlines() == [
        "[IPv4Network('127.0.0.1/32'), IPv4Network('10.0.0.0/8'), IPv6Network('::1/128')]"
    ], listed.stderr
    assert older.stdout.splitlines() == ["1"], older.stderr


def test_dashboard_origins_default_to_allowed_hosts_over_https_without_wildcards():
    result = load_settings(
        "DASHBOARD_ALLOWED_ORIGINS", **PRODUCTION, DJANGO_ALLOWED_HOSTS="fleet.example.com,.example.com,*,10.0.0.5"
    )
    assert result.stdout.splitlines() == ["['https://fleet.example.com:*', 'https://10.0.0.5:*']"], result.stderr


def test_dashboard_origins_in_debug_also_allow_http():
    result = load_settings("DASHBOARD_ALLOWED_ORIGINS", DJANGO_DEBUG="1", DJANGO_ALLOWED_HOSTS="localhost")
    assert result.stdout.splitlines() == ["['https://localhost:*', 'http://localhost:*']"], result.stderr


def test_explicit_dashboard_origins_are_kept_as_given():
    result = load_settings(
        "DASHBOARD_ALLOWED_ORIGINS",
        **PRODUCTION,
        DJANGO_ALLOWED_HOSTS="fleet.example.com",
        DASHBOARD_ALLOWED_ORIGINS="https://ops.example.com, https://fleet.example.com:8443",
    )
    assert result.stdout.splitlines() == ["['https://ops.example.com', 'https://fleet.example.com:8443']"]


def test_the_channel_layers_shard_over_their_own_redis_servers_when_given():
    show = "[[host['address'] for host in layer['CONFIG']['hosts']] for layer in settings.CHANNEL_LAYERS.values()]"
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; print({show})"],
        cwd=BASE_DIR,
        env=child_env(CHANNELS_REDIS_URLS="redis://10.0.0.1:6379/0, redis://10.0.0.2:6379/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    hosts = ["redis://10.0.0.1:6379/0", "redis://10.0.0.2:6379/0"]
    assert result.stdout.splitlines() == [repr([hosts, hosts])], result.stderr
