"""REST API authentication: an API token works as `Token <key>` and, like robots send theirs, `Bearer <key>`."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/telemetry/robots/", "/api/metrics/counters/"])
@pytest.mark.parametrize("keyword", ["Token", "Bearer", "bearer"])
def test_an_api_token_authenticates_with_token_or_bearer(client, operator, r2d2, path, keyword):
    token = Token.objects.create(user=operator)

    response = client.get(path, HTTP_AUTHORIZATION=f"{keyword} {token.key}")

    assert response.status_code == 200


def test_a_wrong_bearer_token_gets_invalid_token_not_credentials_missing(client, r2d2):
    response = client.get("/api/telemetry/robots/", HTTP_AUTHORIZATION="Bearer nope")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}
    assert response["WWW-Authenticate"] == "Token"


def test_a_bearer_header_without_a_token_is_refused_with_a_reason(client, r2d2):
    response = client.get("/api/telemetry/robots/", HTTP_AUTHORIZATION="Bearer")

    assert response.status_code == 401
    assert response.json() == {
        "detail": "Invalid token header. No credentials provided.",
        "code": "authentication_failed",
    }


def test_a_robot_token_sent_as_bearer_is_not_an_api_credential(client, r2d2):
    response = client.get("/api/telemetry/robots/", HTTP_AUTHORIZATION=f"Bearer {r2d2.token}")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}
