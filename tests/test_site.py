"""What every page shares: the product's name on the login page, and a favicon."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.templatetags.static import static

pytestmark = pytest.mark.django_db


def test_the_login_page_carries_the_product_name(client):
    response = client.get("/admin/login/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "<title>Log in | Fleet Telemetry</title>" in html
    assert '<a href="/admin/">Fleet Telemetry</a>' in html


def test_favicon_ico_leads_to_the_svg_icon_that_the_dashboard_links(client, operator):
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == static("fleet/favicon.svg")
    assert finders.find("fleet/favicon.svg") is not None
    client.force_login(operator)
    assert f'<link rel="icon" href="{static("fleet/favicon.svg")}" type="image/svg+xml">' in (
        client.get("/dashboard/").content.decode()
    )
