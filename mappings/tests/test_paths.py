import pytest

from mappings.paths import MISSING, PathError, compile_getter, compile_setter, parse_path


@pytest.mark.parametrize(
    ("path", "tokens"),
    [
        ("name", ("name",)),
        ("client.parent.name", ("client", "parent", "name")),
        ("lines[0].amount", ("lines", 0, "amount")),
        ("lines[*].amount", ("lines", "*", "amount")),
        ("matrix[1][2]", ("matrix", 1, 2)),
    ],
)
def test_paths_parse_into_keys_indexes_and_wildcards(path, tokens):
    assert parse_path(path) == tokens


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a[x]", "a[1", "[0].a", "a b[0]c"])
def test_malformed_paths_are_rejected_with_the_position(bad):
    with pytest.raises(PathError) as caught:
        parse_path(bad)
    assert "path" in str(caught.value).lower()


def test_getters_read_nested_keys_indexes_and_report_missing():
    record = {"client": {"parent": {"name": "Acme Group"}}, "lines": [{"amount": 1}, {"amount": 2}, {"x": 0}]}
    assert compile_getter("client.parent.name")(record) == "Acme Group"
    assert compile_getter("lines[1].amount")(record) == 2
    assert compile_getter("lines[2].x")(record) == 0
    assert compile_getter("lines[9].amount")(record) is MISSING
    assert compile_getter("client.nope")(record) is MISSING
    assert compile_getter("client.parent.name.deeper")(record) is MISSING


def test_wildcard_getter_collects_every_present_value():
    record = {"lines": [{"amount": 1}, {"amount": 2}, {"other": 3}], "groups": [{"items": [1, 2]}, {"items": [3]}]}
    assert compile_getter("lines[*].amount")(record) == [1, 2]
    assert compile_getter("groups[*].items[*]")(record) == [1, 2, 3]
    assert compile_getter("missing[*].amount")(record) == []


def test_setters_build_nested_output_and_spread_wildcards():
    output: dict = {}
    compile_setter("project.client.name")(output, "Acme")
    compile_setter("project.client.id")(output, "C-1")
    compile_setter("lines[*].amount")(output, [10, 20])
    compile_setter("lines[*].currency")(output, ["USD", "USD"])
    compile_setter("tags[1]")(output, "b")
    assert output == {
        "project": {"client": {"name": "Acme", "id": "C-1"}},
        "lines": [{"amount": 10, "currency": "USD"}, {"amount": 20, "currency": "USD"}],
        "tags": [None, "b"],
    }


def test_wildcard_setter_rejects_a_single_value():
    with pytest.raises(PathError) as caught:
        compile_setter("lines[*].amount")({}, 5)
    assert "must be a list" in str(caught.value)
