"""File drops: an uploaded CSV file stored as inbound messages, all or nothing.

Every row is checked first (the CSV structure, then the system's published inbound mapping), and a file with
any bad row stores nothing and lists each error with its row number and field. Rows with an id are keyed by
record version, so the same record in a later file is stored once.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from integrationhub.errors import HubValidationError
from mappings.choices import CanonicalEntityName, Direction
from mappings.compiler import MappingDefinitionError
from mappings.runtime import published_mapping_set, xrefs_resolve
from sync import progress
from sync.choices import FILE_DROP_EVENT_ACTION, BatchKind, BatchStatus, FileDropStatus
from sync.errors import PayloadTooLargeError, SystemPausedError
from sync.ingest import messages_store_batch
from sync.models import FileDrop
from sync.policy import _compiled_for_batch, _setting, _system_legal_entity_id
from sync.polling import record_version

FILE_FIELD = "_file"


ROW_FIELD = "_row"


def file_drop_max_bytes() -> int:
    return int(_setting("HUB_FILE_DROP_MAX_BYTES", 20 * 1024 * 1024))


def file_drop_max_rows() -> int:
    return int(_setting("HUB_FILE_DROP_MAX_ROWS", 50_000))


def _file_drop_rows(text: str) -> tuple[int, list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """(data rows seen, [(row number, record)], errors); row numbers as a spreadsheet shows them (header: row 1)."""
    errors: list[dict[str, Any]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        return 0, [], [{"row": 1, "field": "", "message": f"The header row cannot be read: {exc}"}]
    if not header or not any(header):
        return 0, [], [{"row": 1, "field": "", "message": "The file has no header row naming the fields."}]
    blank = [index + 1 for index, name in enumerate(header) if not name]
    if blank:
        errors.append({"row": 1, "field": "", "message": f"Column(s) {blank} of the header have no name."})
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        errors.append({"row": 1, "field": ", ".join(repeated), "message": "Column names must be unique."})
    rows: list[tuple[int, dict[str, Any]]] = []
    row_number = 1
    seen = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append({"row": reader.line_num, "field": "", "message": f"Malformed row: {exc}"})
            break
        row_number += 1
        if not any(value.strip() for value in values):
            continue  # a blank line (often the last one) is not a record
        seen += 1
        if len(values) != len(header):
            errors.append(
                {
                    "row": row_number,
                    "field": "",
                    "message": f"The row has {len(values)} field(s); the header has {len(header)}.",
                }
            )
            continue
        rows.append((row_number, dict(zip(header, values, strict=True))))
    return seen, rows, errors


def _file_drop_mapping_errors(system: ConnectedSystem, entity: str, rows: list[tuple[int, dict[str, Any]]]) -> list:
    """Each row through the system's published inbound mapping, as the pipeline will: the errors it would hit."""
    mapping_set = published_mapping_set(
        system_id=system.pk,
        entity_name=entity,
        direction=Direction.INBOUND,
        legal_entity_id=_system_legal_entity_id(system.pk),
    )
    if mapping_set is None:
        return []  # the pipeline reports it per message (no published mapping); the rows themselves are fine
    try:
        compiled = _compiled_for_batch(mapping_set.pk)
    except MappingDefinitionError as exc:
        return [{"row": None, "field": "", "message": f"Mapping {mapping_set} does not compile: {exc}"}]
    records = [record for _, record in rows]
    if compiled.uses_xrefs:
        compiled.prefetch_xrefs(records, xrefs_resolve)
    errors = []
    for row_number, record in rows:
        for error in compiled.map_one(record).errors:
            detail = error.as_dict()
            errors.append(
                {
                    "row": row_number,
                    "field": detail["source"] or detail["target"],
                    "message": f"{detail['target']}: {detail['message']}",
                    "value": detail["value"],
                }
            )
    return errors


def file_drop_key(*, entity: str, sha256: str, row: int, record: Mapping[str, Any]) -> str:
    """A row with an id: file:<entity>:<id>:<version> (the same record in a later file is stored once);
    without: file:<file hash>:<row>."""
    external_id = str(record.get("id") or "").strip()
    if not external_id:
        return f"file:{sha256[:40]}:{row}"
    key = f"file:{entity}:{external_id}:{record_version(record)}"
    return key if len(key) <= 200 else f"file:{entity}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def file_drop_ingest(
    *, system: ConnectedSystem, entity: str, file_name: str, content: bytes, user: Any = None
) -> FileDrop:
    """Store every row of an uploaded CSV file as an inbound Message, all or nothing.

    Every row is checked first (the CSV structure, then the system's published inbound mapping when there
    is one); if any row fails, nothing of the file is stored and the FileDrop row lists each error with its
    row number (the header is row 1) and field. The same file uploaded again stores nothing new.
    """
    from integrationhub.logging import new_correlation_id

    if entity not in CanonicalEntityName.values:
        raise HubValidationError(
            f"{entity!r} is not a canonical entity.", errors=[{"field": "entity", "message": "Unknown entity."}]
        )
    if system.state == SystemState.PAUSED:
        raise SystemPausedError(f"System '{system.slug}' is paused; upload the file after it is resumed.")
    if len(content) > file_drop_max_bytes():
        raise PayloadTooLargeError(
            f"The file has {len(content)} bytes; the limit is {file_drop_max_bytes()}.",
            hint="Split the file into smaller ones.",
        )
    digest = hashlib.sha256(content).hexdigest()
    drop = FileDrop(
        system=system,
        entity=entity,
        file_name=file_name[:255],
        sha256=digest,
        correlation_id=new_correlation_id(),
        uploaded_by=user if getattr(user, "is_authenticated", False) else None,
    )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        errors: list[dict[str, Any]] = [
            {"row": None, "field": "", "message": f"The file is not UTF-8 text (byte {exc.start})."}
        ]
        rows: list[tuple[int, dict[str, Any]]] = []
        seen = 0
    else:
        seen, rows, errors = _file_drop_rows(text)
    drop.rows_total = seen
    if len(rows) > file_drop_max_rows():
        errors.append(
            {
                "row": None,
                "field": "",
                "message": f"The file has {len(rows)} rows; the limit is {file_drop_max_rows()}.",
            }
        )
    elif rows:
        # Structural errors do not hide mapping errors: one upload reports every row that needs fixing.
        errors = [*errors, *_file_drop_mapping_errors(system, entity, rows)]
    if not errors and not rows:
        errors = [{"row": None, "field": "", "message": "The file has no data rows."}]
    progress_id = progress.batch_start(
        kind=BatchKind.FILE_DROP, system=system, entity=entity, total=seen, label=drop.file_name
    )
    with transaction.atomic():
        if errors:
            drop.status = FileDropStatus.REJECTED
            drop.errors = sorted(errors, key=lambda error: (error["row"] or 0, error["field"]))[:1000]
            drop.save()
            progress.batch_finish(
                progress_id=progress_id, status=BatchStatus.FAILED, failed=seen, error=f"{len(errors)} error(s)"
            )
            return drop
        keyed = [
            (
                file_drop_key(entity=entity, sha256=digest, row=row_number, record=record),
                {**record, FILE_FIELD: drop.file_name, ROW_FIELD: row_number},
            )
            for row_number, record in rows
        ]
        stored, duplicates = messages_store_batch(
            system=system,
            entity=entity,
            event_type=f"{entity}.{FILE_DROP_EVENT_ACTION}",
            keyed_records=keyed,
            correlation_id=drop.correlation_id,
        )
        drop.rows_accepted = stored
        drop.rows_duplicate = duplicates
        drop.status = FileDropStatus.ACCEPTED if stored else FileDropStatus.DUPLICATE
        drop.save()
        progress.batch_finish(progress_id=progress_id, done=stored + duplicates)
    return drop
