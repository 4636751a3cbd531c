from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from mappings.paths import MISSING
from mappings.transforms import TRANSFORMS, CompileEnv, TransformError, ValueMapData, steps_validate


def make(name, env=None, **params):
    return TRANSFORMS[name].factory(params, env or CompileEnv())


# Each case: transform, params, input, expected output.
GOOD = [
    ("trim", {}, "  Acme  ", "Acme"),
    ("upper", {}, "gbp", "GBP"),
    ("lower", {}, "ACME", "acme"),
    ("title", {}, "senior consultant", "Senior Consultant"),
    ("regex_replace", {"pattern": r"^PRJ-(\d+)$", "replacement": r"P\1"}, "PRJ-0042", "P0042"),
    ("concat", {"separator": " "}, ["Ada", MISSING, "Lovelace"], "Ada Lovelace"),
    ("concat", {"separator": "-", "skip_empty": False}, ["a", "", "b"], "a--b"),
    ("split", {"separator": ","}, "a,b,c", ["a", "b", "c"]),
    ("split", {"separator": " ", "index": -1}, "Ada King Lovelace", "Lovelace"),
    ("substring", {"start": 0, "end": 3}, "GBP-UK", "GBP"),
    ("default", {"value": "USD"}, "", "USD"),
    ("default", {"value": "USD"}, "EUR", "EUR"),
    ("coalesce", {}, [MISSING, None, "", "second", "third"], "second"),
    ("if_equals", {"equals": "Closed Won", "then": "won", "else": "open"}, "Closed Won", "won"),
    ("if_equals", {"equals": "Closed Won", "then": "won", "else": "open"}, "Prospecting", "open"),
    ("if_equals", {"equals": "x", "then": "y"}, "z", "z"),
    (
        "case",
        {"cases": [{"when": "T&M", "then": "time_and_materials"}], "default": "other"},
        "T&M",
        "time_and_materials",
    ),
    ("case", {"cases": [{"when": "T&M", "then": "time_and_materials"}], "default": "other"}, "FF", "other"),
    ("parse_date", {"formats": ["%d/%m/%Y", "iso"]}, "25/11/2026", date(2026, 11, 25)),
    ("parse_date", {"formats": ["%d/%m/%Y", "iso"]}, "2026-11-25", date(2026, 11, 25)),
    (
        "parse_date",
        {"formats": ["%Y-%m-%d %H:%M"], "timezone": "Europe/Berlin", "output": "datetime"},
        "2026-07-01 10:00",
        datetime(2026, 7, 1, 8, 0, tzinfo=UTC),
    ),
    ("parse_date", {"formats": ["%d/%m/%Y"]}, "1/2/2026", date(2026, 2, 1)),
    ("parse_date", {"formats": ["%d %b %Y"]}, "25 Nov 2026", date(2026, 11, 25)),
    ("parse_date", {"formats": ["%Y%m%d"]}, "20261125", date(2026, 11, 25)),
    ("format_date", {"format": "%d.%m.%Y"}, date(2026, 11, 25), "25.11.2026"),
    ("format_date", {"format": "%Y/%m"}, "2026-11-25", "2026/11"),
    ("to_decimal", {"places": 2}, "1,234.565", Decimal("1234.57")),
    ("to_decimal", {"places": 2, "rounding": "half_even"}, "2.345", Decimal("2.34")),
    ("to_decimal", {"places": 0, "rounding": "down"}, 7.9, Decimal("7")),
    ("multiply", {"factor": 1.5}, "10", Decimal("15.0")),
    ("divide", {"divisor": 4}, 10, Decimal("2.5")),
    ("hours_from_minutes", {}, 90, Decimal("1.50")),
    ("hours_from_minutes", {"places": 1}, 100, Decimal("1.7")),
    ("to_bool", {}, "Yes", True),
    ("to_bool", {}, "0", False),
    ("to_bool", {"true_values": ["billable"], "false_values": ["internal"]}, "Internal", False),
]


@pytest.mark.parametrize(("name", "params", "value", "expected"), GOOD)
def test_transform_turns_normal_input_into_the_expected_value(name, params, value, expected):
    assert make(name, **params)(value) == expected


BAD = [
    ("trim", {}, {"a": 1}, "expected text"),
    ("split", {"separator": ",", "index": 5}, "a,b", "out of range"),
    ("parse_date", {"formats": ["%d/%m/%Y"]}, "2026-13-45", "matches none of the formats"),
    ("parse_date", {"formats": ["%d/%m/%Y"]}, "31/02/2026", "matches none of the formats"),
    ("parse_date", {"formats": ["%d/%m/%Y"]}, "25/11/2026 extra", "matches none of the formats"),
    ("format_date", {"format": "%Y"}, "not a date", "not an ISO date"),
    ("to_decimal", {"places": 2}, "twelve", "is not a number"),
    ("to_decimal", {}, "NaN", "not a finite number"),
    ("multiply", {"factor": 2}, "x", "is not a number"),
    ("hours_from_minutes", {}, True, "boolean"),
    ("to_bool", {}, "maybe", "neither a true value"),
]


@pytest.mark.parametrize(("name", "params", "value", "message"), BAD)
def test_transform_rejects_bad_input_with_a_message_saying_why(name, params, value, message):
    with pytest.raises(TransformError) as caught:
        make(name, **params)(value)
    assert message in str(caught.value)


def test_text_and_number_transforms_leave_an_absent_value_absent():
    for name, params in [("trim", {}), ("to_decimal", {"places": 2}), ("parse_date", {}), ("to_bool", {})]:
        assert make(name, **params)(MISSING) is MISSING
        assert make(name, **params)(None) is None


def test_map_value_follows_the_unmapped_behaviour_of_its_value_map():
    env = CompileEnv(
        value_maps={
            "stage": ValueMapData("stage", {"Closed Won": "won"}, unmapped="error"),
            "country": ValueMapData("country", {"UK": "GB"}, unmapped="pass_through"),
            "unit": ValueMapData("unit", {"h": "hour"}, unmapped="default", default="hour"),
        }
    )
    assert make("map_value", env, value_map="stage")("Closed Won") == "won"
    assert make("map_value", env, value_map="country")("DE") == "DE"
    assert make("map_value", env, value_map="unit")("hrs") == "hour"
    with pytest.raises(TransformError) as caught:
        make("map_value", env, value_map="stage")("Lost")
    assert "'Lost' is not in value map 'stage'" in str(caught.value)
    with pytest.raises(TransformError):
        make("map_value", env, value_map="nope")


def test_currency_convert_uses_the_latest_rate_valid_on_the_date():
    convert = make(
        "currency_convert",
        to="USD",
        rates=[
            {"from": "EUR", "valid_from": "2026-01-01", "rate": "1.10"},
            {"from": "EUR", "valid_from": "2026-07-01", "rate": "1.20"},
        ],
    )
    assert convert(["100", "EUR", "2026-06-30"]) == Decimal("110.00")
    assert convert(["100", "EUR", "2026-07-01"]) == Decimal("120.00")
    assert convert(["100", "USD", "2026-07-01"]) == Decimal("100.00")
    with pytest.raises(TransformError) as caught:
        convert(["100", "EUR", "2025-12-31"])
    assert "no EUR→USD rate valid on 2025-12-31" in str(caught.value)
    with pytest.raises(TransformError):
        convert(["100", "GBP", "2026-07-01"])


def test_lookup_xref_reads_the_batch_cache_and_names_the_missing_reference():
    env = CompileEnv(xref_cache={("crm", "client", "001A"): "client-7"})
    lookup = make("lookup_xref", env, system="crm", entity="client")
    assert lookup("001A") == "client-7"
    with pytest.raises(TransformError) as caught:
        lookup("001B")
    assert "no cross-reference for client '001B' in system 'crm'" in str(caught.value)


def test_every_transform_is_documented_and_has_a_parameter_schema():
    for spec in TRANSFORMS.values():
        assert spec.doc, spec.name
        assert spec.params_schema["type"] == "object"


def test_unknown_transforms_and_bad_parameters_are_rejected_before_running():
    problems = steps_validate(
        [
            {"transform": "reverse_words"},
            {"transform": "to_decimal", "params": {"places": -1}},
            {"transform": "regex_replace", "params": {"pattern": "(", "replacement": ""}},
            {"transform": "divide", "params": {"divisor": 0}},
            {"transform": "trim", "params": {"unexpected": True}},
            {"transform": "map_value", "params": {"value_map": "ghost"}},
            {"transform": "parse_date", "params": {"timezone": "Mars/Olympus"}},
        ],
        source_count=1,
        value_map_names={"stage"},
    )
    text = "\n".join(problems)
    assert "Step 1: unknown transform 'reverse_words'" in text
    assert "Step 2 (to_decimal): parameter places" in text
    assert "Step 3 (regex_replace): pattern is not a valid regular expression" in text
    assert "Step 4 (divide): parameter divisor" in text
    assert "Step 5 (trim): parameter params" in text and "unexpected" in text
    assert "value map 'ghost' does not exist" in text
    assert "unknown time zone 'Mars/Olympus'" in text


def test_several_sources_need_a_combining_first_step():
    assert steps_validate([{"transform": "trim"}], source_count=2)
    assert steps_validate([], source_count=2)
    assert steps_validate([{"transform": "concat"}, {"transform": "trim"}], source_count=2) == []
    assert "must be the first step" in " ".join(
        steps_validate([{"transform": "trim"}, {"transform": "concat"}], source_count=1)
    )
