"""OpenAPI: the schema describes API keys, the docs page is served from static/ under the CSP, and the
deprecation mechanism sets Deprecation, Sunset and Link headers."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import pytest
from django.contrib.staticfiles import finders
from django.test import Client, override_settings
from drf_spectacular.generators import SchemaGenerator

from integrationhub.api.deprecation import deprecation_headers

pytestmark = pytest.mark.django_db

PROBE = "integrationhub.tests.sec_urls"


def test_docs_page_loads_swagger_ui_from_static_only_under_a_strict_csp():
    # when the docs page is opened
    response = Client().get("/api/docs/")

    # then every script is a local static file (no CDN, no inline script) and those files exist
    assert response.status_code == 200
    html = response.content.decode()
    scripts = re.findall(r"<script([^>]*)>", html)
    sources = [re.search(r'src="([^"]+)"', attributes).group(1) for attributes in scripts]
    assert len(sources) == len(scripts) == 3
    for source in sources:
        assert source.startswith("/static/"), source
        assert finders.find(source.removeprefix("/static/")), source
    assert 'data-schema-url="/api/schema/"' in html
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_schema_describes_api_key_authentication_and_the_security_endpoints():
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schema["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }
    assert "/api/v1/api-keys/" in schema["paths"] and "/api/v1/audit-events/export/" in schema["paths"]


def test_deprecation_headers_follow_the_rfcs():
    import datetime

    headers = deprecation_headers(
        sunset=datetime.date(2027, 6, 30), deprecated_on=datetime.date(2026, 7, 1), link="https://hub.example/x"
    )
    assert headers["Deprecation"] == f"@{int(datetime.datetime(2026, 7, 1, tzinfo=datetime.UTC).timestamp())}"
    assert parsedate_to_datetime(headers["Sunset"]) == datetime.datetime(2027, 7, 1, tzinfo=datetime.UTC)
    assert headers["Link"] == '<https://hub.example/x>; rel="deprecation"; type="text/html"'


@override_settings(ROOT_URLCONF=PROBE)
def test_a_deprecated_view_answers_with_deprecation_sunset_and_link():
    response = Client().get("/api/test-api/deprecated/")
    assert response.status_code == 200
    assert response["Deprecation"].startswith("@")
    assert response["Sunset"] == "Thu, 01 Jul 2027 00:00:00 GMT"
    assert 'rel="deprecation"' in response["Link"] and "rate-cards-v2" in response["Link"]


@override_settings(ROOT_URLCONF=PROBE)
def test_a_deprecated_action_carries_the_headers_and_its_siblings_do_not():
    client = Client()
    legacy = client.get("/api/test-api/probe-partly-deprecated/legacy/")
    current = client.get("/api/test-api/probe-partly-deprecated/")
    assert legacy.status_code == 200 and legacy["Sunset"] == "Mon, 01 Feb 2027 00:00:00 GMT"
    assert "Deprecation" not in current and "Sunset" not in current


def test_the_schema_marks_deprecated_operations():
    schema = SchemaGenerator(urlconf=PROBE).get_schema(request=None, public=True)
    assert schema["paths"]["/api/test-api/deprecated/"]["get"]["deprecated"] is True
    assert schema["paths"]["/api/test-api/probe-partly-deprecated/legacy/"]["get"]["deprecated"] is True
    assert "deprecated" not in schema["paths"]["/api/test-api/probe-partly-deprecated/"]["get"]
