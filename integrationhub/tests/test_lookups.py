"""ids_by_key: which keys a table holds, among rows with given fields, by index probes that need no statistics."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from integrationhub.lookups import ids_by_key
from sandbox.models import SandboxRecord
from sandbox.services import now_ms

pytestmark = pytest.mark.django_db


def _record(system: str, object_type: str, key: str, number: int) -> SandboxRecord:
    stamp = now_ms()
    return SandboxRecord.objects.create(
        system=system,
        object_type=object_type,
        external_id=str(number),
        idempotency_key=key,
        data={},
        created_at=stamp,
        updated_at=stamp,
    )


def test_it_answers_the_ids_of_the_keys_held_among_the_rows_asked_for():
    # given keys held by ERP time entries, one by a PSA entry and one by an ERP project
    entries = {key: _record("erp", "time-entries", key, n).pk for n, key in enumerate(["k-1", "k-2", "k-3"])}
    _record("psa", "time-entries", "k-4", 10)
    _record("erp", "projects", "k-5", 11)
    # when the ERP's time entries are asked for five keys, an empty one and a repeated one
    found = ids_by_key(
        SandboxRecord,
        "idempotency_key",
        ["k-1", "k-2", "k-4", "k-5", "", "k-9", "k-1"],
        system="erp",
        object_type="time-entries",
    )
    # then only the keys those rows hold answer, each with its row's id
    assert found == {"k-1": entries["k-1"], "k-2": entries["k-2"]}
    assert ids_by_key(SandboxRecord, "idempotency_key", [], system="erp") == {}
    assert ids_by_key(SandboxRecord, "idempotency_key", [""], system="erp") == {}


def test_each_key_is_one_index_probe_whatever_the_statistics_say():
    # given a table of 3,000 keyed records that was never analysed (the planner knows nothing of its columns)
    stamp = now_ms()
    SandboxRecord.objects.bulk_create(
        SandboxRecord(
            system="erp",
            object_type="time-entries",
            external_id=str(n),
            idempotency_key=f"k-{n}",
            data={},
            created_at=stamp,
            updated_at=stamp,
        )
        for n in range(3000)
    )
    # when 500 keys are looked up
    with CaptureQueriesContext(connection) as queries:
        found = ids_by_key(
            SandboxRecord,
            "idempotency_key",
            [f"k-{n}" for n in range(0, 1000, 2)],
            system="erp",
            object_type="time-entries",
        )
    assert len(found) == 500
    # then the plan probes the (system, object_type, key) index per key and reads no other row
    (query,) = queries.captured_queries
    postgresql = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute(("EXPLAIN " if postgresql else "EXPLAIN QUERY PLAN ") + query["sql"])
        plan = "\n".join(" ".join(str(column) for column in row) for row in cursor.fetchall())
    if postgresql:
        assert "Seq Scan on sandbox_sandboxrecord" not in plan, plan
        assert "Bitmap Heap Scan" not in plan, plan
    else:
        assert "SCAN sandbox_sandboxrecord" not in plan, plan
    assert "sandbox_record_idempotency_key" in plan, plan
