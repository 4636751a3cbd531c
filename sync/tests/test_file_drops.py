"""CSV file drops: every row a message, all or nothing, errors reported by row number and field."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from sync.choices import FileDropStatus, MessageStatus
from sync.models import FileDrop, Message
from sync.services import message_process

pytestmark = pytest.mark.django_db

GOOD = (
    "Id,Name,Status,UpdatedAt\n"
    "C-1,Acme,active,2026-11-26T10:00:00Z\n"
    "C-2,Globex,active,2026-11-26T10:00:00Z\n"
    "\n"
    "C-3,Initech,inactive,2026-11-26T10:00:00Z\n"
)
BAD = (
    "Id,Name,Status,UpdatedAt\n"
    "C-1,Acme,active,2026-11-26T10:00:00Z\n"
    "C-2,Globex,active\n"
    "C-3,Initech,,2026-11-26T10:00:00Z\n"
)


def _upload(client, flow, text: str, name: str = "clients.csv"):
    upload = SimpleUploadedFile(name, text.encode(), content_type="text/csv")
    return client.post(
        "/api/v1/file-drops/", {"system": flow.source.slug, "entity": "client", "file": upload}, format="multipart"
    )


def test_a_good_file_stores_one_message_per_row_and_the_same_file_again_stores_nothing(client_as, make_flow, target):
    # given a source with a published client mapping
    flow = make_flow(target.url)
    admin = client_as("integration_admin")
    # when a CSV of three clients (and a blank line) is uploaded, then uploaded again
    first = _upload(admin, flow, GOOD)
    second = _upload(admin, flow, GOOD, name="clients-again.csv")
    # then three messages wait for the dispatcher, sharing the file's correlation id; the second upload added none
    assert first.status_code == 201, first.content
    assert (first.json()["status"], first.json()["rows_total"], first.json()["rows_accepted"]) == ("accepted", 3, 3)
    assert second.status_code == 201
    assert (second.json()["status"], second.json()["rows_duplicate"]) == (FileDropStatus.DUPLICATE, 3)
    messages = Message.objects.filter(system=flow.source).order_by("id")
    assert [m.raw_payload["Id"] for m in messages] == ["C-1", "C-2", "C-3"]
    assert [m.raw_payload["_row"] for m in messages] == [2, 3, 5]
    assert {m.correlation_id for m in messages} == {first.json()["correlation_id"]}
    assert {m.event_type for m in messages} == {"client.imported"}
    # and each runs through the pipeline like any other inbound message
    assert message_process(message_id=messages[0].pk) == MessageStatus.QUEUED


def test_a_file_with_bad_rows_stores_nothing_and_reports_each_row_and_field(client_as, make_flow, target):
    # given a file whose row 3 lacks a field and whose row 4 has no status
    flow = make_flow(target.url)
    # when it is uploaded
    response = _upload(client_as("integration_admin"), flow, BAD)
    # then it is refused as a whole, with each error named by row and field
    assert response.status_code == 422, response.content
    body = response.json()
    rows = [(error["row"], error["field"]) for error in body["errors"]]
    assert rows[0] == (3, "")
    assert "has 3 field(s); the header has 4" in body["errors"][0]["message"]
    assert (4, "Status") in rows
    assert body["file_drop"]["status"] == FileDropStatus.REJECTED
    assert body["file_drop"]["rows_accepted"] == 0
    assert not Message.objects.exists()
    assert FileDrop.objects.get().status == FileDropStatus.REJECTED


def test_an_unknown_system_or_entity_is_a_422_problem(client_as, make_flow, target):
    flow = make_flow(target.url)
    admin = client_as("integration_admin")
    upload = SimpleUploadedFile("x.csv", GOOD.encode())
    unknown_system = admin.post("/api/v1/file-drops/", {"system": "nope", "entity": "client", "file": upload})
    unknown_entity = admin.post(
        "/api/v1/file-drops/",
        {"system": flow.source.slug, "entity": "widget", "file": SimpleUploadedFile("x.csv", GOOD.encode())},
    )
    assert unknown_system.status_code == 422
    assert unknown_entity.status_code == 422
    assert not Message.objects.exists()


def test_only_a_role_that_may_add_file_drops_uploads(client_as, make_flow, target):
    flow = make_flow(target.url)
    response = _upload(client_as("analyst"), flow, GOOD)
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_the_admin_upload_page_stores_the_file_and_shows_the_report(client_as, make_flow, target):
    # given an integration admin on the Sync → File drops → Upload file page
    flow = make_flow(target.url)
    admin = client_as("integration_admin")
    assert "Upload file" in admin.get("/admin/sync/filedrop/").content.decode()
    # when a file with a bad row is uploaded, then a good one
    bad = admin.post(
        "/admin/sync/filedrop/upload/",
        {"system": flow.source.slug, "entity": "client", "file": SimpleUploadedFile("bad.csv", BAD.encode())},
    )
    good = admin.post(
        "/admin/sync/filedrop/upload/",
        {"system": flow.source.slug, "entity": "client", "file": SimpleUploadedFile("good.csv", GOOD.encode())},
    )
    # then the page lists the bad file's errors by row, and the good file's accepted rows
    assert bad.status_code == 200
    page = bad.content.decode()
    assert "Rejected" in page and "<td>3</td>" in page and "<td>Status</td>" in page
    assert '<strong id="rows-accepted">3</strong>' in good.content.decode()
    assert Message.objects.filter(system=flow.source).count() == 3


def test_the_admin_upload_page_is_refused_to_an_analyst(client_as):
    assert client_as("analyst").get("/admin/sync/filedrop/upload/").status_code == 403
