"""The REST API against hostile and random requests: schemathesis over every operation, anonymous access, logs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from tests.reliability.fleet import assert_no_secret_in_logs, http_get, make_robots
from tests.servers import ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)

# Public on purpose: the service's own description and its counts.
PUBLIC = {"/api/telemetry/info"}


REQUEST_CHECKS = "negative_data_rejection,positive_data_acceptance"


def schemathesis(url: str, cwd: Path, exclude: str = "", *options: str) -> subprocess.CompletedProcess:
    """Every check on every operation, 15 examples each, except those in `exclude`.

    Always excluded are the two that judge request validation by the schema alone (REQUEST_CHECKS):
    negative_data_rejection (DRF's LimitOffsetPagination deliberately ignores a malformed limit/offset and serves
    the default page) and positive_data_acceptance (since/until are strings whose ISO 8601 or Unix-seconds form is
    checked by the view and answered with a documented 400).
    """
    st = Path(sys.executable).with_name("st")
    return subprocess.run(
        [
            str(st),
            "run",
            url,
            "--checks",
            "all",
            "--exclude-checks",
            ",".join(filter(None, [REQUEST_CHECKS, exclude])),
            *options,
        ]
        + ["--max-examples", "15", "--seed", "1", "--no-color"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_every_operation_survives_schemathesis_and_private_ones_refuse_anonymous_callers(tmp_path, operator):
    tokens = make_robots(2, "api")
    api_token = Token.objects.create(user=operator).key
    # Schemathesis sends hundreds of anonymous requests: the anonymous throttle is not under test here.
    server = ServerProcess.daphne(tmp_path, API_ANON_THROTTLE="100000/minute")
    try:
        status, schema, _ = http_get(f"{server.base_url}/api/schema/?format=json")
        assert status == 200
        paths = schema["paths"]
        operations = [(path, method) for path, item in paths.items() for method in item if method != "parameters"]
        assert len(operations) >= 8

        # Anonymous callers get 401 with a code from every private operation, whatever the arguments.
        for path, method in operations:
            if method != "get":
                continue
            concrete = re.sub(r"\{[^}]+\}", next(iter(tokens)), path)
            status, body, _ = http_get(f"{server.base_url}{concrete}")
            if path in PUBLIC:
                assert status == 200, path
            else:
                assert (status, body["code"]) == (401, "not_authenticated"), (path, status, body)

        url = f"{server.base_url}/api/schema/?format=json"
        # With a fixed valid token on every request, ignored_auth cannot tell; the anonymous run checks it.
        authenticated = schemathesis(url, tmp_path, "ignored_auth", "--header", f"Authorization: Token {api_token}")
        assert authenticated.returncode == 0, authenticated.stdout[-6000:]
        # The schema documents 401 with its body on every private operation, so every check applies.
        anonymous = schemathesis(url, tmp_path)
        assert anonymous.returncode == 0, anonymous.stdout[-6000:]
        for run in (authenticated, anonymous):
            assert "Server error" not in run.stdout
    finally:
        server.stop()
    assert_no_secret_in_logs([server.log_path], [*tokens.values(), api_token])
