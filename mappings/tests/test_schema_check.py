import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from mappings.compiler import MappingSpec, RuleSpec, compile_mapping, schema_refs_inlined
from mappings.schema_check import fast_check_compile

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
FORMATS = Draft202012Validator.FORMAT_CHECKER

VALID_TIME_ENTRY = {
    "id": "te-1",
    "resource_id": "res-1",
    "project_id": "prj-1",
    "date": "2026-11-26",
    "hours": 7.5,
    "rate": "150.00",
    "currency": "GBP",
    "cost_code": "CC-1",
    "billable": True,
    "approval_status": "approved",
    "approved_at": "2026-11-26T10:00:00+00:00",
    "approver_id": "res-2",
    "legal_entity_code": "UK01",
    "period": "2026-11",
    "revision": 1,
    "supersedes_id": None,
    "external_refs": {"psa": "TE-1"},
    "custom_fields": {"anything": [1, 2]},
}
ODD_VALUES = [
    None,
    "",
    "x",
    "2026-13-01",
    "2026-11-26",
    "2026-11-26T10:00:00Z",
    "a" * 2100,
    0,
    -1,
    1.0,
    25,
    True,
    [],
    {},
]


def time_entry_variants():
    """The valid entry, then each field set to each odd value, each required field dropped, an extra field."""
    yield VALID_TIME_ENTRY
    for name in VALID_TIME_ENTRY:
        for value in ODD_VALUES:
            variant = copy.deepcopy(VALID_TIME_ENTRY)
            variant[name] = value
            yield variant
        dropped = copy.deepcopy(VALID_TIME_ENTRY)
        del dropped[name]
        yield dropped
    yield {**VALID_TIME_ENTRY, "unexpected": 1}
    yield {**VALID_TIME_ENTRY, "external_refs": {"bad slug!": "x"}}
    yield {**VALID_TIME_ENTRY, "approval_status": "submitted", "approved_at": "not a time"}


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda path: path.stem)
def test_every_shipped_canonical_schema_gets_a_fast_check(path):
    schema = schema_refs_inlined(json.loads(path.read_text()))
    assert fast_check_compile(schema, format_checker=FORMATS) is not None


def test_the_fast_check_agrees_with_the_full_validator_on_valid_and_broken_time_entries():
    # given the time-entry schema with its formats checked, as canonical payloads are validated
    raw = json.loads((SCHEMAS / "time_entry.json").read_text())
    full = Draft202012Validator(raw, format_checker=FORMATS)
    fast = fast_check_compile(schema_refs_inlined(raw), format_checker=FORMATS)
    assert fast is not None
    # when both judge the valid entry and several hundred broken variants of it
    verdicts = [(fast(variant), not list(full.iter_errors(variant))) for variant in time_entry_variants()]
    # then the fast check never accepts what the full validator rejects, and here it agrees on every one
    assert not [index for index, (quick, reference) in enumerate(verdicts) if quick and not reference]
    assert all(quick == reference for quick, reference in verdicts)
    assert sum(reference for _, reference in verdicts) >= 10  # valid variants were judged too
    assert sum(not reference for _, reference in verdicts) >= 100


def test_keywords_read_differently_by_the_two_drafts_get_no_fast_check():
    for schema in (
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"type": "object", "unevaluatedProperties": False},
        {"enum": [1, 2]},  # jsonschema tells True from 1 here, fastjsonschema does not
        {"const": True},
        {"type": "number", "multipleOf": 0.01},
        {"$ref": "https://example.com/other.json"},
        {"type": "array", "items": [{"type": "string"}]},
    ):
        assert fast_check_compile(schema) is None, schema


def test_the_fast_check_fills_in_no_defaults_and_checks_formats_only_when_asked():
    schema = {
        "type": "object",
        "properties": {"revision": {"type": "integer", "default": 1}, "day": {"format": "date"}},
    }
    record = {"day": "not a date"}
    # without a format checker a format is an annotation, as for jsonschema without one
    assert fast_check_compile(schema)(record) is True
    assert record == {"day": "not a date"}
    # with one, the same checker decides
    assert fast_check_compile(schema, format_checker=FORMATS)(record) is False
    assert fast_check_compile(schema, format_checker=FORMATS)({"day": "2026-11-26"}) is True


def test_a_mapped_record_rejected_by_the_schema_still_reports_the_field_and_its_source():
    # given a mapping whose output schema wants a positive number
    schema = {"type": "object", "properties": {"hours": {"type": "number", "exclusiveMinimum": 0}}}
    mapping = compile_mapping(MappingSpec(label="t", rules=[RuleSpec("hours", ["Hours"])], output_schema=schema))
    assert mapping.schema_fast_check is not None
    # when a valid and an invalid record are mapped
    good, bad = mapping.map_one({"Hours": 3}), mapping.map_one({"Hours": -1})
    # then the valid one passes and the invalid one names the target, the source path and the value
    assert good.ok
    assert [(error.target, error.source, error.value) for error in bad.errors] == [("hours", "Hours", -1)]
