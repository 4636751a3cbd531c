"""The CSV file drop: legacy systems that can only leave files in a folder (or hand one over as an upload).

Each data row of a CSV file is one record (the header row names the fields). `fetch_changes` reads the
files of the system's folder in name order, so name files so that they sort in the order they were
written (a timestamp prefix: 20250131T1700-time.csv). The cursor is "<file name>:<rows read>", so a
pull resumes in the middle of a file and a file that grows is read on from where it stopped; a file
whose name sorts before the cursor's is never read again.

A malformed row (more or fewer fields than the header, or a quoting error) stops the pull with a
terminal error naming the file and its row number as a spreadsheet shows it (the header is row 1):
the file must be fixed and dropped again, and no row after it is delivered out of order.

The folder is resolved inside HUB_CSV_DROP_ROOT (default: <HUB_VAR_DIR>/csv-drop), so a system's
settings cannot make the hub read an arbitrary path of the server.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings

from connectors.base import ChangeBatch, Connector, HealthResult
from connectors.http import TerminalConnectorError

CANONICAL_ENTITY_NAMES = [
    "client",
    "contact",
    "opportunity",
    "contract",
    "project",
    "milestone",
    "resource",
    "role",
    "rate_card",
    "time_entry",
    "expense",
    "invoice",
    "payment",
]
FILE_FIELD = "_file"
ROW_FIELD = "_row"


class MalformedCsvRowError(TerminalConnectorError):
    """A row of a dropped CSV file cannot be read: the file must be fixed and dropped again."""

    code = "csv_malformed_row"
    title = "A row of the CSV file is malformed"

    def __init__(self, detail: str, *, file_name: str, row: int, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.file_name = file_name
        self.row = row


def drop_root() -> Path:
    """The folder every CSV drop folder must live in."""
    configured = getattr(django_settings, "HUB_CSV_DROP_ROOT", None)
    return Path(configured or Path(django_settings.VAR_DIR) / "csv-drop").resolve()


def parse_cursor(cursor: str | None) -> tuple[str, int]:
    """("", 0) for no cursor; else the file name and how many of its data rows were read."""
    if not cursor:
        return "", 0
    name, sep, offset = cursor.rpartition(":")
    if not sep or not offset.isdigit():
        raise TerminalConnectorError(f"Invalid CSV drop cursor {cursor[:80]!r}; expected '<file>:<rows>'")
    return name, int(offset)


class CsvDropConnector(Connector):
    """Reads records from CSV files dropped in a folder; a read-only source."""

    name = "csv_drop"
    label = "CSV file drop"
    role_hint = ""
    description = "Legacy batch: CSV files left in a folder (or uploaded), one record per row."
    sensitive_parameters = frozenset()
    capabilities = frozenset({"health_check", "fetch_changes"})
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["folder"],
        "properties": {
            "folder": {
                "type": "string",
                "minLength": 1,
                "description": "Folder of the files, relative to HUB_CSV_DROP_ROOT (or absolute inside it).",
            },
            "file_pattern": {"type": "string", "minLength": 1, "default": "*.csv"},
            "entity_patterns": {
                "type": "object",
                "description": "Per canonical entity, the file names that hold it, e.g. time_entry → time-*.csv.",
                "propertyNames": {"enum": CANONICAL_ENTITY_NAMES},
                "additionalProperties": {"type": "string", "minLength": 1},
            },
            "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","},
            "encoding": {"type": "string", "minLength": 1, "default": "utf-8-sig"},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 500},
        },
    }

    @property
    def slug(self) -> str:
        return str(getattr(self.system, "slug", ""))

    def folder(self) -> Path:
        root = drop_root()
        configured = Path(str(self.settings.get("folder", "")))
        folder = (configured if configured.is_absolute() else root / configured).resolve()
        if folder != root and not folder.is_relative_to(root):
            raise TerminalConnectorError(
                f"The CSV drop folder of system '{self.slug}' is outside the drop root",
                system_slug=self.slug,
                hint="Set the folder relative to HUB_CSV_DROP_ROOT.",
            )
        return folder

    def _pattern(self, entity: str) -> str:
        patterns = self.settings.get("entity_patterns") or {}
        return str(patterns.get(entity) or self.settings.get("file_pattern", "*.csv"))

    def _files(self, entity: str) -> list[Path]:
        folder = self.folder()
        if not folder.is_dir():
            raise TerminalConnectorError(
                f"The CSV drop folder of system '{self.slug}' does not exist: {folder.name}",
                system_slug=self.slug,
                hint="Create the folder, or correct the folder setting.",
            )
        pattern = self._pattern(entity)
        return sorted(p for p in folder.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern))

    # -- reading --

    def _rows(self, name: str, text: io.TextIOBase, skip: int) -> Iterator[dict[str, Any]]:
        """The records of one file after its first `skip` data rows; MalformedCsvRowError on a bad row."""
        reader = csv.reader(text, delimiter=str(self.settings.get("delimiter", ",")), strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise self._malformed(name, 1, f"the header cannot be read ({exc})") from exc
        if not header:
            return
        header = [column.strip() for column in header]
        if len(set(header)) != len(header) or any(not column for column in header):
            raise self._malformed(name, 1, "the header has an empty or repeated column name")
        number = 0
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._malformed(name, reader.line_num, f"it cannot be parsed ({exc})") from exc
            if not values or all(not value.strip() for value in values):
                continue  # blank lines are not records
            number += 1
            row_number = reader.line_num  # the header is row 1, as a spreadsheet shows it
            if number <= skip:
                continue
            if len(values) != len(header):
                raise self._malformed(
                    name, row_number, f"it has {len(values)} fields where the header has {len(header)}"
                )
            yield {**dict(zip(header, values, strict=True)), FILE_FIELD: name, ROW_FIELD: row_number}

    def _malformed(self, name: str, row: int, why: str) -> MalformedCsvRowError:
        return MalformedCsvRowError(
            f"Row {row} of {name} is malformed: {why}",
            file_name=name,
            row=row,
            system_slug=self.slug,
            hint="Fix the row and drop the file again; the rows before it were read.",
        )

    def _page(self, sources: list[tuple[str, Any]], cursor: str | None) -> ChangeBatch:
        """A page from `sources` (name, opener) in name order, resuming at the cursor."""
        start_name, offset = parse_cursor(cursor)
        size = int(self.settings.get("page_size", 500))
        records: list[dict[str, Any]] = []
        position = cursor
        has_more = False
        encoding = str(self.settings.get("encoding", "utf-8-sig"))
        for name, opener in sources:
            if start_name and name < start_name:
                continue
            skip = offset if name == start_name else 0
            with opener(encoding) as text:
                rows = self._rows(name, text, skip)
                taken = list(itertools.islice(rows, size - len(records)))
                records.extend(taken)
                position = f"{name}:{skip + len(taken)}"
                if len(records) >= size:
                    try:
                        has_more = next(rows, None) is not None
                    except MalformedCsvRowError:
                        has_more = True  # the next page reports it, with this page's rows delivered
            if len(records) >= size:
                if not has_more:
                    # This file is done; does any later file hold a row?
                    has_more = any(later > name for later, _ in sources)
                break
        return ChangeBatch(records=records, next_cursor=position, has_more=has_more)

    def fetch_changes(self, entity: str, cursor: str | None) -> ChangeBatch:
        """The next page of rows of the folder's files for `entity`, after the cursor."""
        files = self._files(entity)

        def opener(path: Path) -> Any:
            return lambda encoding: path.open(encoding=encoding, newline="")

        try:
            return self._page([(path.name, opener(path)) for path in files], cursor)
        except UnicodeDecodeError as exc:
            raise TerminalConnectorError(
                f"A CSV file of system '{self.slug}' is not {self.settings.get('encoding', 'utf-8-sig')}",
                system_slug=self.slug,
            ) from exc

    def read_upload(self, *, name: str, content: bytes | str, cursor: str | None = None) -> ChangeBatch:
        """A page of an uploaded file, exactly as if it had been dropped in the folder under `name`."""
        text = content if isinstance(content, str) else content.decode(str(self.settings.get("encoding", "utf-8-sig")))
        return self._page([(name, lambda _encoding: io.StringIO(text, newline=""))], cursor)

    def health_check(self) -> HealthResult:
        """The folder exists and can be listed; the message says how many files wait in it."""
        started = time.perf_counter()
        files = self._files("")
        return HealthResult(
            ok=True,
            status_code=None,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            message=f"Folder {self.folder().name} holds {len(files)} file(s) matching {self._pattern('')}",
        )
