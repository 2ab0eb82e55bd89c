"""deploy/ and the docs stay in step with the settings: every variable is in the example env file and documented."""

from __future__ import annotations

import re

from django.conf import settings

from tests.servers import BASE_DIR

DEPLOY = BASE_DIR / "deploy"


def variables_the_settings_read() -> set[str]:
    source = (BASE_DIR / "fleet" / "settings.py").read_text()
    return set(re.findall(r'(?:env(?:bool|int|float|list)|os\.environ\.get)\(\s*"([A-Z_]+)"', source))


def test_the_settings_read_the_variables_this_test_expects_to_find():
    assert {"DJANGO_DEBUG", "FLEET_TRUSTED_PROXIES", "DASHBOARD_ALLOWED_ORIGINS", "ROBOTS_REQUIRE_TLS"} <= (
        variables_the_settings_read()
    )


def test_the_example_env_file_names_every_variable():
    example = (DEPLOY / "fleet.env.example").read_text()
    named = set(re.findall(r"^#? ?([A-Z_]+)=", example, flags=re.MULTILINE))
    assert sorted(variables_the_settings_read() - named) == []


def test_the_docs_describe_every_variable():
    docs = (BASE_DIR / "README.md").read_text() + "".join(
        path.read_text() for path in sorted((BASE_DIR / "docs").glob("*.md"))
    )
    assert sorted(name for name in variables_the_settings_read() if f"`{name}`" not in docs) == []


def test_nginx_waits_on_a_quiet_socket_longer_than_the_service_does():
    site = (DEPLOY / "nginx" / "fleet.conf").read_text()
    socket_block = site[site.index("location ~ ^/api/telemetry/(ws/|fleet/ws$)") :]
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", socket_block).group(1))
    assert read_timeout > settings.TELEMETRY_IDLE_TIMEOUT
    assert read_timeout > settings.TELEMETRY_DASHBOARD_STALL_TIMEOUT


def test_the_systemd_units_start_the_web_processes_and_the_workers():
    units = {path.name: path.read_text() for path in (DEPLOY / "systemd").iterdir()}
    assert sorted(units) == ["fleet-daphne@.service", "fleet-qcluster.service", "fleet.target"]
    assert (
        "ExecStart=/srv/fleet/app/.venv/bin/python -m fleet.serve --bind 127.0.0.1 --port %i"
        in units["fleet-daphne@.service"]
    )
    assert "ExecStart=/srv/fleet/app/.venv/bin/python -m fleet.qcluster" in units["fleet-qcluster.service"]
    assert "Wants=fleet-daphne@8001.service fleet-daphne@8002.service fleet-qcluster.service" in units["fleet.target"]


def test_the_readme_stays_a_tour_under_200_lines():
    # Reference material belongs in docs/; the README is the first hour.
    assert len((BASE_DIR / "README.md").read_text().splitlines()) < 200
