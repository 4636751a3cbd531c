"""The sandbox CRM speaks Salesforce: OAuth2 client credentials, bearer checks, SOQL with paging, sObjects, upsert."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.utils import timezone

from sandbox.choices import CrmObject, SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.tests.conftest import CRM_CLIENT_ID, CRM_CLIENT_SECRET, CRM_DATA
from sandbox.tests.factories import SandboxRecordFactory

pytestmark = pytest.mark.django_db
TOKEN_URL = "/sandbox/crm/services/oauth2/token"


def create(client: Client, sobject: str, **fields) -> str:
    response = client.post(f"{CRM_DATA}/sobjects/{sobject}/", fields, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_token_endpoint_issues_a_bearer_token_with_instance_url(sandbox_credentials):
    # given the configured client credentials
    # when the client credentials grant is asked for
    response = Client().post(
        TOKEN_URL, {"grant_type": "client_credentials", "client_id": CRM_CLIENT_ID, "client_secret": CRM_CLIENT_SECRET}
    )
    # then a token comes back in Salesforce's shape
    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == "http://testserver/sandbox/crm"
    assert body["access_token"] and body["issued_at"].isdigit() and body["expires_in"] == 7200


def test_wrong_secret_is_400_invalid_client(sandbox_credentials):
    response = Client().post(
        TOKEN_URL, {"grant_type": "client_credentials", "client_id": CRM_CLIENT_ID, "client_secret": "wrong"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_client", "error_description": "invalid client credentials"}


def test_unknown_client_and_wrong_grant_are_400(sandbox_credentials):
    unknown = Client().post(TOKEN_URL, {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_client_id"
    grant = Client().post(TOKEN_URL, {"grant_type": "password", "client_id": CRM_CLIENT_ID})
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("authorization", ["", "Bearer not-a-token", "Basic abc"])
def test_data_calls_without_a_valid_token_are_401_invalid_session_id(sandbox_credentials, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().get(f"{CRM_DATA}/query", {"q": "SELECT Id FROM Account"}, **headers)
    assert response.status_code == 401
    assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_expired_token_is_refused(crm_client):
    # given every issued token has expired
    from sandbox.models import SandboxAccessToken

    SandboxAccessToken.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    # when it is used
    response = crm_client.get(f"{CRM_DATA}/sobjects/Account/")
    # then the session is invalid
    assert response.status_code == 401


def test_sobject_create_get_update_delete(crm_client):
    # given an account and an opportunity created through the API
    account_id = create(crm_client, "Account", Name="Acme Advisory", BillingCountry="GB")
    opportunity_id = create(
        crm_client,
        "Opportunity",
        Name="Acme deal",
        StageName="Prospecting",
        CloseDate="2025-06-30",
        AccountId=account_id,
    )
    # then the ids are Salesforce-like: 18 characters with the type's key prefix
    assert re.fullmatch(r"001[A-Za-z0-9]{15}", account_id)
    assert re.fullmatch(r"006[A-Za-z0-9]{15}", opportunity_id)
    # when the opportunity is read
    record = crm_client.get(f"{CRM_DATA}/sobjects/Opportunity/{opportunity_id}").json()
    # then it has attributes, the fields and system timestamps
    assert record["attributes"] == {
        "type": "Opportunity",
        "url": f"/services/data/v60.0/sobjects/Opportunity/{opportunity_id}",
    }
    assert record["Name"] == "Acme deal" and record["AccountId"] == account_id and record["IsClosed"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", record["LastModifiedDate"])
    # when it is updated
    response = crm_client.patch(
        f"{CRM_DATA}/sobjects/Opportunity/{opportunity_id}", {"Amount": 1200}, content_type="application/json"
    )
    # then 204 and the change is stored, other fields kept
    assert response.status_code == 204
    assert crm_client.get(f"{CRM_DATA}/sobjects/Opportunity/{opportunity_id}").json()["Amount"] == 1200
    # when it is deleted
    assert crm_client.delete(f"{CRM_DATA}/sobjects/Opportunity/{opportunity_id}").status_code == 204
    # then it is gone from reads and queries, but still in queryAll with IsDeleted
    gone = crm_client.get(f"{CRM_DATA}/sobjects/Opportunity/{opportunity_id}")
    assert gone.status_code == 404 and gone.json()[0]["errorCode"] == "NOT_FOUND"
    assert crm_client.get(f"{CRM_DATA}/query", {"q": "SELECT Id FROM Opportunity"}).json()["totalSize"] == 0
    all_rows = crm_client.get(f"{CRM_DATA}/queryAll", {"q": "SELECT Id, IsDeleted FROM Opportunity"}).json()
    assert all_rows["records"][0]["IsDeleted"] is True


def test_create_validation_errors_are_salesforce_shaped(crm_client):
    missing = crm_client.post(f"{CRM_DATA}/sobjects/Opportunity/", {"Name": "x"}, content_type="application/json")
    assert missing.status_code == 400
    assert missing.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert missing.json()[0]["fields"] == ["StageName", "CloseDate"]
    unknown = crm_client.post(
        f"{CRM_DATA}/sobjects/Account/", {"Name": "x", "Bogus": 1}, content_type="application/json"
    )
    assert unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    readonly = crm_client.post(
        f"{CRM_DATA}/sobjects/Account/", {"Name": "x", "Id": "1"}, content_type="application/json"
    )
    assert readonly.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    reference = crm_client.post(
        f"{CRM_DATA}/sobjects/Contact/",
        {"LastName": "x", "AccountId": "001000000000000AAA"},
        content_type="application/json",
    )
    assert reference.json()[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert SandboxRecord.objects.count() == 0


def test_upsert_by_external_id_creates_201_then_updates_204(crm_client):
    url = f"{CRM_DATA}/sobjects/Account/External_Id__c/HUB-42"
    # when an account is upserted by an external id nobody has
    first = crm_client.patch(url, {"Name": "Globex"}, content_type="application/json")
    # then it is created
    assert first.status_code == 201
    assert first.json()["created"] is True and first.json()["success"] is True
    # when the same external id is upserted again
    second = crm_client.patch(url, {"Name": "Globex Corp"}, content_type="application/json")
    # then the same record is updated, with 204
    assert second.status_code == 204
    records = SandboxRecord.objects.filter(system=SandboxSystem.CRM, object_type=CrmObject.ACCOUNT)
    assert records.count() == 1
    assert records.get().data == {"Name": "Globex Corp", "External_Id__c": "HUB-42"}
    # and it can be read by the external id
    assert crm_client.get(url).json()["Id"] == first.json()["id"]


def test_upsert_on_a_non_external_id_field_is_404(crm_client):
    response = crm_client.patch(f"{CRM_DATA}/sobjects/Account/Name/Globex", {}, content_type="application/json")
    assert response.status_code == 404


def make_accounts(count: int, *, start: dt.datetime, first: int = 0) -> list[str]:
    """`count` accounts; pairs share a LastModifiedDate so paging must use Id as the tiebreak."""
    ids = []
    for index in range(first, first + count):
        stamp = start + dt.timedelta(seconds=(index - first) // 2)
        record = SandboxRecordFactory(
            system=SandboxSystem.CRM,
            object_type=CrmObject.ACCOUNT,
            external_id=f"001{index:015d}",
            data={"Name": f"Account {index}"},
            created_at=stamp,
            updated_at=stamp,
        )
        ids.append(record.external_id)
    return ids


def test_soql_pages_through_nextrecordsurl_without_gap_or_duplicate(crm_client):
    # given 25 accounts changed after the cursor and 3 before it
    start = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    make_accounts(3, start=start - dt.timedelta(days=1), first=100)
    expected = make_accounts(25, start=start)
    soql = (
        "SELECT Id, Name, LastModifiedDate FROM Account WHERE LastModifiedDate > "
        f"{(start - dt.timedelta(seconds=1)).strftime('%Y-%m-%dT%H:%M:%SZ')} ORDER BY LastModifiedDate, Id"
    )
    # when the query is paged with a batch size of 10
    headers = {"HTTP_SFORCE_QUERY_OPTIONS": "batchSize=10"}
    page = crm_client.get(f"{CRM_DATA}/query", {"q": soql}, **headers).json()
    seen, pages = [], 0
    while True:
        pages += 1
        assert page["totalSize"] == 25
        seen += [row["Id"] for row in page["records"]]
        assert list(page["records"][0]) == ["attributes", "Id", "Name", "LastModifiedDate"]
        if page["done"]:
            assert "nextRecordsUrl" not in page
            break
        assert page["nextRecordsUrl"].startswith("/services/data/v60.0/query/")
        page = crm_client.get(f"/sandbox/crm{page['nextRecordsUrl']}").json()
    # then three pages hold every record once, in LastModifiedDate, Id order
    assert pages == 3
    assert seen == expected


def test_the_same_next_page_can_be_fetched_twice(crm_client):
    # given a query with more than one page
    make_accounts(5, start=timezone.now() - dt.timedelta(minutes=5))
    first = crm_client.get(
        f"{CRM_DATA}/query", {"q": "SELECT Id FROM Account ORDER BY Id"}, HTTP_SFORCE_QUERY_OPTIONS="batchSize=2"
    ).json()
    # when its next page is asked for twice (a retried call)
    again = [crm_client.get(f"/sandbox/crm{first['nextRecordsUrl']}").json() for _ in range(2)]
    # then both answers are the same page
    assert again[0]["records"] == again[1]["records"]
    assert [r["Id"] for r in again[0]["records"]] == ["001000000000000002", "001000000000000003"]


def test_a_record_changed_while_paging_is_not_lost(crm_client):
    # given 6 accounts and the first page of 3 read
    ids = make_accounts(6, start=timezone.now() - dt.timedelta(minutes=5))
    soql = "SELECT Id FROM Account WHERE LastModifiedDate > 2000-01-01T00:00:00Z ORDER BY LastModifiedDate, Id"
    first = crm_client.get(f"{CRM_DATA}/query", {"q": soql}, HTTP_SFORCE_QUERY_OPTIONS="batchSize=3").json()
    # when a record not yet read is changed before the next page
    crm_client.patch(f"{CRM_DATA}/sobjects/Account/{ids[3]}", {"Phone": "1"}, content_type="application/json")
    rest = crm_client.get(f"/sandbox/crm{first['nextRecordsUrl']}").json()
    # then every record is still read exactly once, the changed one last
    seen = [r["Id"] for r in first["records"] + rest["records"]]
    assert sorted(seen) == sorted(ids)
    assert seen[-1] == ids[3]


def test_soql_filters_on_stage_and_limit(crm_client):
    account = create(crm_client, "Account", Name="A")
    for index, stage in enumerate(["Closed Won", "Prospecting", "Closed Won"]):
        create(crm_client, "Opportunity", Name=f"O{index}", StageName=stage, CloseDate="2025-01-01", AccountId=account)
    soql = (
        "SELECT Id, Name, StageName FROM Opportunity WHERE LastModifiedDate > 2020-01-01T00:00:00.000+0000 "
        "AND StageName = 'Closed Won' ORDER BY LastModifiedDate, Id"
    )
    body = crm_client.get(f"{CRM_DATA}/query", {"q": soql}).json()
    assert body["totalSize"] == 2 and body["done"] is True
    assert {r["Name"] for r in body["records"]} == {"O0", "O2"}
    limited = crm_client.get(f"{CRM_DATA}/query", {"q": "SELECT Id FROM Opportunity LIMIT 1"}).json()
    assert limited["totalSize"] == 1 and len(limited["records"]) == 1 and limited["done"] is True


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Invoice__x", "INVALID_TYPE"),
        ("SELECT Id, Bogus FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Name = 'a' OR Name = 'b'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account ORDER BY Name", "MALFORMED_QUERY"),
        ("DELETE FROM Account", "MALFORMED_QUERY"),
    ],
)
def test_unsupported_soql_is_400_with_the_salesforce_error_code(crm_client, soql, code):
    response = crm_client.get(f"{CRM_DATA}/query", {"q": soql})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == code


def test_unknown_query_locator_is_400(crm_client):
    response = crm_client.get(f"{CRM_DATA}/query/01gXXXXXXXXXXXXXXX-200")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_health_is_open_and_whoami_needs_the_token(crm_client):
    assert Client().get("/sandbox/crm/health").json() == {"status": "ok"}
    assert Client().get("/sandbox/crm/whoami").status_code == 401
    assert crm_client.get("/sandbox/crm/whoami").json()["system"] == "crm"
