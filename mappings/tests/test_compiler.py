import pytest

from mappings.compiler import MappingDefinitionError, MappingSpec, RuleSpec, compile_mapping
from mappings.transforms import ValueMapData

PROJECT_SCHEMA = {
    "type": "object",
    "required": ["id", "name", "client"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string", "minLength": 3},
        "client": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        "budget": {"type": "number", "minimum": 0},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"hours": {"type": "number"}}}},
    },
}


def spec(*rules, schema=PROJECT_SCHEMA, value_maps=None):
    return MappingSpec(label="test", rules=list(rules), value_maps=value_maps or {}, output_schema=schema)


def test_renames_nested_output_and_list_paths_map_in_one_pass():
    # given rules with a rename, a nested output, a wildcard list and a decimal
    mapping = compile_mapping(
        spec(
            RuleSpec("id", ["Id"]),
            RuleSpec("name", ["Name"], [{"transform": "trim"}]),
            RuleSpec("client.id", ["Account.Id"]),
            RuleSpec("budget", ["Amount"], [{"transform": "to_decimal", "params": {"places": 2}}]),
            RuleSpec("lines[*].hours", ["Lines[*].Minutes"], [{"transform": "hours_from_minutes"}]),
        )
    )
    # when a record is mapped
    result = mapping.map_one(
        {
            "Id": "P1",
            "Name": " Atlas rollout ",
            "Account": {"Id": "001"},
            "Amount": "1200.456",
            "Lines": [{"Minutes": 90}, {"Minutes": 30}],
        }
    )
    # then the output is nested, list items are transformed one by one, and decimals are JSON numbers
    assert result.errors == []
    assert result.output == {
        "id": "P1",
        "name": "Atlas rollout",
        "client": {"id": "001"},
        "budget": 1200.46,
        "lines": [{"hours": 1.5}, {"hours": 0.5}],
    }


def test_errors_name_the_target_field_source_path_and_source_value():
    mapping = compile_mapping(
        spec(
            RuleSpec("id", ["Id"], required=True),
            RuleSpec("name", ["Name"]),
            RuleSpec("client.id", ["Account.Id"], required=True),
            RuleSpec("budget", ["Amount"], [{"transform": "to_decimal"}]),
        )
    )
    result = mapping.map_one({"Id": "P1", "Name": "Atlas", "Amount": "lots"})
    errors = {error.target: error for error in result.errors}
    assert errors["client.id"].source == "Account.Id"
    assert "required" in errors["client.id"].message
    assert errors["budget"].source == "Amount"
    assert errors["budget"].value == "lots"
    assert "step 1 (to_decimal): 'lots' is not a number" in errors["budget"].message


def test_schema_validation_errors_point_back_to_the_rule_and_its_source():
    mapping = compile_mapping(
        spec(
            RuleSpec("id", ["Id"]),
            RuleSpec("name", ["Name"]),
            RuleSpec("client.id", ["AccountId"]),
            RuleSpec("budget", ["Amount"]),
        )
    )
    result = mapping.map_one({"Id": "P1", "Name": "At", "AccountId": "001", "Amount": -5})
    by_target = {error.target: error for error in result.errors}
    assert set(by_target) == {"name", "budget"}
    assert by_target["name"].source == "Name" and by_target["name"].value == "At"
    assert "too short" in by_target["name"].message
    assert by_target["budget"].value == -5


def test_missing_required_canonical_field_is_reported_with_its_path():
    mapping = compile_mapping(spec(RuleSpec("id", ["Id"]), RuleSpec("name", ["Name"])))
    result = mapping.map_one({"Id": "P1", "Name": "Atlas"})
    assert [error.target for error in result.errors] == ["client"]
    assert "'client' is a required property" in result.errors[0].message


def test_defaults_conditions_and_value_maps_apply():
    mapping = compile_mapping(
        spec(
            RuleSpec("stage", ["StageName"], [{"transform": "map_value", "params": {"value_map": "stage"}}]),
            RuleSpec("currency", ["Currency"], default="USD"),
            RuleSpec("won_on", ["CloseDate"], condition={"path": "StageName", "op": "equals", "value": "Closed Won"}),
            schema=None,
            value_maps={"stage": ValueMapData("stage", {"Closed Won": "won", "Prospecting": "open"})},
        )
    )
    won = mapping.map_one({"StageName": "Closed Won", "CloseDate": "2026-11-20"})
    open_ = mapping.map_one({"StageName": "Prospecting", "CloseDate": "2026-12-01", "Currency": "GBP"})
    assert won.output == {"stage": "won", "currency": "USD", "won_on": "2026-11-20"}
    assert open_.output == {"stage": "open", "currency": "GBP"}


def test_a_broken_rule_is_rejected_when_compiled_with_every_problem_listed():
    with pytest.raises(MappingDefinitionError) as caught:
        compile_mapping(
            spec(
                RuleSpec("id", ["Id"], [{"transform": "shout"}]),
                RuleSpec("name..x", ["Name"]),
                RuleSpec("budget", ["Amount"], [{"transform": "to_decimal", "params": {"places": "two"}}]),
            )
        )
    problems = caught.value.problems
    assert any("Rule for id" in p and "unknown transform 'shout'" in p for p in problems)
    assert any("Rule for name..x: target path" in p for p in problems)
    assert any("Rule for budget" in p and "parameter places" in p for p in problems)


def test_cross_references_for_a_batch_are_resolved_in_one_call():
    calls = []

    def resolve(keys):
        calls.append(set(keys))
        return {key: f"canon-{key[2]}" for key in keys if key[2] != "999"}

    mapping = compile_mapping(
        spec(
            RuleSpec(
                "client_id",
                ["AccountId"],
                [{"transform": "trim"}, {"transform": "lookup_xref", "params": {"system": "crm", "entity": "client"}}],
            ),
            schema=None,
        )
    )
    results = mapping.map_batch(
        [{"AccountId": " 1 "}, {"AccountId": "2"}, {"AccountId": "1"}, {"AccountId": "999"}], resolve_xrefs=resolve
    )
    assert calls == [{("crm", "client", "1"), ("crm", "client", "2"), ("crm", "client", "999")}]
    assert [r.output.get("client_id") for r in results] == ["canon-1", "canon-2", "canon-1", None]
    assert "no cross-reference for client '999'" in results[3].errors[0].message


def test_concat_combines_several_sources_and_outputs_nested_objects():
    mapping = compile_mapping(
        spec(
            RuleSpec(
                "contact.full_name", ["FirstName", "LastName"], [{"transform": "concat", "params": {"separator": " "}}]
            ),
            schema=None,
        )
    )
    assert mapping.map_one({"FirstName": "Ada", "LastName": "Lovelace"}).output == {
        "contact": {"full_name": "Ada Lovelace"}
    }


def test_plain_copies_keep_keys_with_quotes_and_skip_missing_or_non_object_parents():
    # given plain copies whose keys hold quotes, backslashes and spaces, and two rules under one nested target
    mapping = compile_mapping(
        spec(
            RuleSpec("id", ['it\'s "quoted"']),
            RuleSpec("client.id", ["Account.Id\\x"]),
            RuleSpec("client.name", ["Account.Name ok"]),
            RuleSpec("name", ["Missing"]),
            RuleSpec("budget", ["Owner.Budget"]),
            schema=None,
        )
    )
    # when a record with those keys is mapped, one source missing and one parent not an object
    result = mapping.map_one(
        {'it\'s "quoted"': "P1", "Account": {"Id\\x": "001", "Name ok": "Acme"}, "Owner": "not an object"}
    )
    # then the keys are read literally, both nested rules share one output object and the rest is left out
    assert result.ok
    assert result.output == {"id": "P1", "client": {"id": "001", "name": "Acme"}}
