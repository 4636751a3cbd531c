"""The mapping editor's rules table as it arrives from the browser or the API, parsed row by row.

Shared by the preview (mappings/editor.py) and the save (mappings/services.py), so both read a row the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from integrationhub.errors import HubValidationError

RULE_FIELDS = ("target_path", "source_paths", "steps", "required", "has_default", "default_value", "condition", "notes")


@dataclass(frozen=True)
class RuleRow:
    """One row of the editor's rules table, parsed: the rule's fields, or the problems that stop it parsing."""

    index: int
    id: int | None
    fields: dict[str, Any]
    problems: list[str]


def _json_text(text: Any, *, label: str, problems: list[str], empty: Any) -> Any:
    if not isinstance(text, str):
        return text
    if not text.strip():
        return empty
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{label} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).")
        return empty


def rule_row_parse(*, index: int, row: Any) -> RuleRow:
    """Parse one row as the editor sends it: JSON columns may arrive as text (steps, default, condition).

    Source paths may be a JSON list or comma-separated text. An empty default means "no default"; a default
    that is not JSON is taken as text, so `GBP` works as well as `"GBP"`.
    """
    if not isinstance(row, dict):
        return RuleRow(index=index, id=None, fields={}, problems=["A rule row must be a JSON object."])
    problems: list[str] = []
    sources = row.get("source_paths", [])
    if isinstance(sources, str):
        text = sources.strip()
        if text.startswith("["):
            sources = _json_text(text, label="Source paths", problems=problems, empty=[])
        else:
            sources = [part.strip() for part in text.split(",") if part.strip()]
    steps = _json_text(row.get("steps", []), label="Steps", problems=problems, empty=[])
    condition = _json_text(row.get("condition"), label="Condition", problems=problems, empty=None)
    if "default" in row:  # the editor's single "default" box: empty means none
        raw = row["default"]
        has_default = not (raw is None or (isinstance(raw, str) and not raw.strip()))
        default_value: Any = None
        if has_default and isinstance(raw, str):
            try:
                default_value = json.loads(raw)
            except json.JSONDecodeError:
                default_value = raw.strip()
        elif has_default:
            default_value = raw
    else:
        has_default = bool(row.get("has_default", False))
        default_value = row.get("default_value")
    raw_id = row.get("id")
    try:
        rule_id = int(raw_id) if raw_id not in (None, "") else None
    except (TypeError, ValueError):
        rule_id = None
        problems.append(f"Unknown rule id {raw_id!r}.")
    fields = {
        "target_path": str(row.get("target_path") or "").strip(),
        "source_paths": sources,
        "steps": steps,
        "required": bool(row.get("required", False)),
        "has_default": has_default,
        "default_value": default_value,
        "condition": condition or None,
        "notes": str(row.get("notes") or "")[:300],
    }
    return RuleRow(index=index, id=rule_id, fields=fields, problems=problems)


def rule_rows_parse(rows: Any) -> list[RuleRow]:
    """Parse every row of a rules table; a table that is not a list is refused naming the field."""
    if not isinstance(rows, list):
        raise HubValidationError(
            "The rules must be a list of rule rows.", errors=[{"field": "rules", "message": "expected a list"}]
        )
    return [rule_row_parse(index=index, row=row) for index, row in enumerate(rows)]
