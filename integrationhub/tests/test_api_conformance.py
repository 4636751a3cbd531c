"""The API answers as its OpenAPI schema says: errors are documented problem+json on every operation, the
inbound webhook is in the schema, and inputs that once made the server fail now get a 4xx."""

from __future__ import annotations

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_every_operation_documents_its_problem_answers(schema):
    # given the generated schema (the DRF operations)
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    missing = []
    for path, operations in schema["paths"].items():
        if path.startswith("/api/v1/inbound/"):
            continue  # signed, not authenticated: its own answers, checked below
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            # then each operation documents 401, 403, 404 and 429 as problem+json
            for code in ("401", "403", "404", "429"):
                answer = operation["responses"].get(code, {})
                if answer.get("content", {}).get("application/problem+json", {}).get("schema") != problem_ref:
                    missing.append(f"{method.upper()} {path} {code}")
    assert missing == []
    assert schema["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]


def test_the_inbound_webhook_is_documented_with_its_answers(schema):
    operation = schema["paths"]["/api/v1/inbound/{system_slug}/{event_type}/"]["post"]
    assert {"202", "200", "400", "401", "404", "413", "423", "429"} <= set(operation["responses"])
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header" and p["required"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_canonical_validate_documents_its_result_not_its_request(schema):
    operation = schema["paths"]["/api/v1/canonical-entities/{name}/validate/"]["post"]
    response_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert response_ref.endswith("/PayloadValidationResult") and request_ref.endswith("/PayloadValidation")
    assert schema["components"]["schemas"]["PayloadValidationResult"]["required"] == ["errors", "valid"]


def test_an_api_url_that_matches_nothing_answers_problem_json(client_as):
    # when an id that no route accepts is asked for (the routers refuse a dot in an id)
    response = client_as("auditor").get("/api/v1/mapping-sets/0.5/")
    # then 404 problem+json, not Django's HTML page
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404
    # and outside /api/ the pages stay HTML
    assert Client().get("/no-such-page/")["Content-Type"].startswith("text/html")


def test_a_huge_limit_is_capped_and_a_huge_offset_is_an_empty_page(client_as):
    reader = client_as("auditor")
    huge = reader.get("/api/v1/canonical-entities/", {"limit": "1216997705473268908032"})
    far = reader.get("/api/v1/canonical-entities/", {"offset": "9" * 30})
    assert huge.status_code == 200 and far.status_code == 200
    assert far.json()["results"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/exception-items/?newer_than_hours=5.443424577469704e%2B16",
        "/api/v1/exception-items/?older_than_hours=-1",
        "/api/v1/exception-items/?message=-3.1023463764078084e%2B16",
        "/api/v1/delivery-attempts/?message=-1.2177750909264415e%2B29",
        "/api/v1/delivery-attempts/?delivery=6.103515625e-05",
        "/api/v1/delivery-attempts/?status_code=99999999999999999999",
    ],
)
def test_out_of_range_numbers_in_filters_are_400_naming_the_parameter(client_as, url):
    response = client_as("integration_admin").get(url)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    name = url.split("?", 1)[1].split("=", 1)[0]
    assert [error["field"] for error in response.json()["errors"]] == [name]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit-events/?until=5171-09-13T13%3A05%3A12-16%3A06",
        "/api/v1/messages/?received_after=2026-01-01T00%3A00%3A00%2B23%3A59",
        "/api/v1/delivery-attempts/?created_before=2026-01-01T00%3A00%3A00-20%3A00",
        "/api/v1/exception-items/?created_after=2026-01-01T00%3A00%3A00-16%3A30",
    ],
)
def test_a_date_time_with_an_offset_beyond_postgresqls_range_is_compared_in_utc(client_as, url):
    # given an instant written with an offset Python accepts and PostgreSQL would not (more than 15:59)
    # when it filters a list
    response = client_as("integration_admin").get(url)
    # then the list answers (the instant is compared in UTC), on SQLite and PostgreSQL alike
    assert response.status_code == 200, response.content


def test_the_utc_filter_asks_for_the_same_instant():
    import datetime

    from integrationhub.api.filters import UtcDateTimeFilter
    from integrationhub.models import AuditEvent

    # given an instant at -16:06
    instant = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone(-datetime.timedelta(hours=16, minutes=6)))
    # when it filters
    query = str(
        UtcDateTimeFilter(field_name="occurred_at", lookup_expr="lt").filter(AuditEvent.objects.all(), instant).query
    )
    # then the query holds the same instant in UTC
    assert "2026-01-02 04:06:00" in query


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/rate-cards/lookup/?legal_entity=UK01&role=Manager&date=2026-05-01&contract=a%00b",
        "/api/v1/legal-entities/?search=%00",
        "/api/v1/messages/?%00=1",
    ],
)
def test_a_nul_character_in_a_query_string_is_400_naming_the_parameter(client_as, url):
    # when a query parameter carries a NUL character (PostgreSQL text cannot hold one)
    response = client_as("integration_admin").get(url)
    # then 400 problem+json naming it, on SQLite and PostgreSQL alike
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["message"] == "Null characters are not allowed."


def test_a_json_body_with_a_nul_character_is_400_before_any_view_stores_it(client_as):
    # when a JSON body holds an escaped NUL in a key or a value
    admin = client_as("integration_admin")
    in_value = admin.post(
        "/api/v1/legal-entities/", '{"code": "ZZ01", "name": "Z\\u0000"}', content_type="application/json"
    )
    in_key = admin.post("/api/v1/legal-entities/", '{"co\\u0000de": "ZZ02"}', content_type="application/json")
    # then both are 400 problem+json saying so, and nothing is stored
    assert in_value.status_code == 400 and in_key.status_code == 400
    assert "NUL" in in_value.json()["detail"] and "NUL" in in_key.json()["detail"]
    from governance.models import LegalEntity

    assert not LegalEntity.objects.filter(code__in=["ZZ01", "ZZ02"]).exists()


@pytest.mark.parametrize(
    "body",
    ["code=ZZ03&name=Z%00", "co%00de=ZZ03&name=Zed"],
    ids=["in a value", "in a field name"],
)
def test_a_form_body_with_a_nul_character_is_400_naming_the_field(client_as, body):
    # when a form-encoded body holds a NUL character (a slug lookup on PostgreSQL would otherwise fail)
    response = client_as("integration_admin").post(
        "/api/v1/mapping-sets/", body, content_type="application/x-www-form-urlencoded"
    )
    # then 400 problem+json naming the field, and nothing is stored
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert "NUL" in response.json()["detail"] and "'" in response.json()["detail"]
    from mappings.models import MappingSet

    assert not MappingSet.objects.exists()


def test_a_multipart_body_with_a_nul_character_is_400(client_as):
    from django.test.client import encode_multipart

    body = encode_multipart("BoUnDaRy", {"system": "crm\x00", "entity": "client"})
    response = client_as("integration_admin").post(
        "/api/v1/file-drops/", body, content_type="multipart/form-data; boundary=BoUnDaRy"
    )
    assert response.status_code == 400, response.content
    assert "'system'" in response.json()["detail"]


def test_a_multipart_json_field_with_an_escaped_nul_is_400_naming_the_field(client_as):
    from django.test.client import encode_multipart

    from mappings.choices import CanonicalEntityName
    from mappings.models import CanonicalEntity, CanonicalSchema

    entity = CanonicalEntity.objects.create(name=CanonicalEntityName.values[0])
    # when a JSON field sent as multipart form data holds \u0000 in a key (a JSON body is refused by its parser)
    body = encode_multipart(
        "BoUnDaRy", {"entity": entity.name, "json_schema": '{"type": "object", "properties": {"a\\u0000b": {}}}'}
    )
    response = client_as("integration_admin").post(
        "/api/v1/canonical-schemas/", body, content_type="multipart/form-data; boundary=BoUnDaRy"
    )
    # then 400 problem+json naming the field, and nothing is stored
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert "'json_schema'" in response.json()["detail"] and "NUL" in response.json()["detail"]
    assert not CanonicalSchema.objects.exists()
