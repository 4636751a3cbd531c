"""The CSV file drop: folder and upload reading, cursors across files, malformed rows named by their number."""

from __future__ import annotations

import pytest

from connectors.choices import SystemRole
from connectors.csv_drop import MalformedCsvRowError
from connectors.http import TerminalConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import connector_for
from connectors.services import connected_system_test_connection


@pytest.fixture
def drop(settings, tmp_path):
    settings.HUB_CSV_DROP_ROOT = str(tmp_path)
    (tmp_path / "legacy").mkdir()
    return tmp_path / "legacy"


def make_connector(**settings):
    system = ConnectedSystem(
        name="Legacy timesheets",
        slug="legacy",
        role=SystemRole.PSA,
        connector_type="csv_drop",
        base_url="http://legacy.invalid/",
        settings={"folder": "legacy", "page_size": 2, **settings},
    )
    return connector_for(system)


def test_rows_are_read_in_file_name_order_and_the_cursor_resumes_mid_file(drop):
    # given two dropped files, the later one named to sort last
    (drop / "20250102-time.csv").write_text("id,hours\nB1,2\n")
    (drop / "20250101-time.csv").write_text("id,hours\nA1,1\nA2,1.5\n\nA3,3\n")
    connector = make_connector()
    # when the rows are fetched page by page
    first = connector.fetch_changes("time_entry", None)
    second = connector.fetch_changes("time_entry", first.next_cursor)
    # then each row is a record with its file and row number, blank lines skipped, files in name order
    assert [r["id"] for r in first.records] == ["A1", "A2"] and first.has_more
    assert first.next_cursor == "20250101-time.csv:2"
    assert [(r["id"], r["_file"], r["_row"]) for r in second.records] == [
        ("A3", "20250101-time.csv", 5),
        ("B1", "20250102-time.csv", 2),
    ]
    assert not second.has_more
    # and a row appended later is read from where the last pull stopped
    with (drop / "20250102-time.csv").open("a") as handle:
        handle.write("B2,4\n")
    third = connector.fetch_changes("time_entry", second.next_cursor)
    assert [r["id"] for r in third.records] == ["B2"]


def test_a_malformed_row_is_rejected_with_its_row_number(drop):
    # given a file whose fourth row has a field too many
    (drop / "time.csv").write_text("id,hours\nA1,1\nA2,2\nA3,3,extra\nA4,4\n")
    connector = make_connector()
    # when the first page is read it holds the good rows before it
    first = connector.fetch_changes("time_entry", None)
    assert [r["id"] for r in first.records] == ["A1", "A2"] and first.has_more
    # then the next page stops at the malformed row, naming the file and the row as a spreadsheet shows it
    with pytest.raises(MalformedCsvRowError) as caught:
        connector.fetch_changes("time_entry", first.next_cursor)
    assert caught.value.row == 4
    assert not caught.value.retryable
    assert "Row 4 of time.csv" in caught.value.detail


def test_an_uploaded_file_pages_like_a_dropped_one(drop):
    # given an upload rather than a file in the folder
    content = b"id;hours\nU1;1\nU2;2\nU3;3\n"
    # when it is read with the system's delimiter
    connector = make_connector(delimiter=";")
    first = connector.read_upload(name="upload.csv", content=content)
    second = connector.read_upload(name="upload.csv", content=content, cursor=first.next_cursor)
    # then it pages with the same cursor
    assert [r["id"] for r in first.records + second.records] == ["U1", "U2", "U3"]
    assert not second.has_more


def test_a_folder_outside_the_drop_root_is_refused(drop):
    connector = make_connector(folder="../../etc")
    with pytest.raises(TerminalConnectorError, match="outside the drop root"):
        connector.fetch_changes("time_entry", None)


def test_the_connection_test_reports_a_missing_folder(drop):
    system = ConnectedSystem(
        name="Legacy",
        slug="legacy-missing",
        role=SystemRole.PSA,
        connector_type="csv_drop",
        base_url="http://legacy.invalid/",
        settings={"folder": "not-there"},
    )
    result = connected_system_test_connection(system=system)
    assert result.ok is False
    assert "does not exist" in result.message
    (drop / "a.csv").write_text("id\n1\n")
    assert make_connector().health_check().message.endswith("holds 1 file(s) matching *.csv")
