"""The compiled mapping validates against its canonical schema with the `$defs` references inlined: the
same verdicts and messages as the schema itself, without resolving a reference per record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from mappings.compiler import schema_refs_inlined

SCHEMAS = sorted((Path(__file__).resolve().parents[1] / "schemas").glob("*.json"))


def _errors(schema: dict, record: object) -> list[tuple[str, str]]:
    return sorted((error.json_path, error.message) for error in Draft202012Validator(schema).iter_errors(record))


@pytest.mark.parametrize("path", SCHEMAS, ids=[path.stem for path in SCHEMAS])
def test_every_canonical_schema_is_inlined_and_judges_records_alike(path):
    schema = json.loads(path.read_text())
    inlined = schema_refs_inlined(schema)
    assert "$ref" not in json.dumps(inlined)
    # records that break every kind of field: wrong types, bad patterns, and one of each property type
    wrong_types = {name: {"unexpected": True} for name in schema.get("properties", {})}
    wrong_strings = dict.fromkeys(schema.get("properties", {}), "not valid \x01")
    wrong_numbers = dict.fromkeys(schema.get("properties", {}), -1)
    for record in ({}, [], wrong_types, wrong_strings, wrong_numbers):
        assert _errors(inlined, record) == _errors(schema, record)
    # and a record that breaks nothing of the reference-backed kinds is judged alike too
    assert _errors(inlined, {"id": "X-1"}) == _errors(schema, {"id": "X-1"})


def test_a_recursive_or_foreign_reference_leaves_the_schema_as_it_is():
    recursive = {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    }
    foreign = {"properties": {"a": {"$ref": "https://example.com/other.json"}}}
    assert schema_refs_inlined(recursive) == recursive
    assert schema_refs_inlined(foreign) == foreign
