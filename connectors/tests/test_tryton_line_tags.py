"""How a Tryton timesheet line carries the hub's key (no Tryton needed): the PSA's description first, the key at
its end; lines written the older way, key first, are still read, and reconciliation reads them the same way."""

from __future__ import annotations

import pytest

from connectors.tryton import _line_tag_domain, _line_text, line_key_of, tag_for
from reconciliation.services import _line_key_of


@pytest.mark.parametrize(
    ("description", "key"),
    [
        ("Data model review [hub:hub-te-1a2b]", "hub-te-1a2b"),
        ("Review [of] the [hub] model [hub:k_1%]", "k_1%"),
        ("hub:hub-te-1a2b", "hub-te-1a2b"),
        ("hub:hub-te-1a2b Workshop", "hub-te-1a2b"),
        ("Typed in Tryton by hand", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_the_key_is_read_from_every_form_a_line_has_had(description, key):
    assert line_key_of(description) == key
    assert _line_key_of(description) == key


def test_the_description_reads_as_written_with_the_key_at_its_end():
    tag = tag_for("hub-te-1a2b")
    assert _line_text(tag, "  Steering\ncommittee ") == "Steering committee [hub:hub-te-1a2b]"
    assert _line_text(tag, "") == "hub:hub-te-1a2b"
    assert line_key_of(_line_text(tag, "Steering committee")) == "hub-te-1a2b"


def test_the_search_finds_both_forms_and_escapes_like_wildcards():
    domain = _line_tag_domain([tag_for("a_b%")])
    assert domain[:2] == ["OR", ("description", "in", ["hub:a_b%"])]
    assert ("description", "like", "% [hub:a\\_b\\%]") in domain
    assert ("description", "like", "hub:a\\_b\\% %") in domain
