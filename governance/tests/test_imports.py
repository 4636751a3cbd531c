"""Imports: dry run first, all-or-nothing, every error with its row number, history with user and file."""

from __future__ import annotations

import datetime
import io
import json
from decimal import Decimal

import pytest
import tablib
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from governance.models import LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from governance.resources import RateCardResource
from governance.services import governance_import
from governance.tests.factories import (
    CanonicalEntityFactory,
    ConnectedSystemFactory,
    LegalEntityFactory,
    RateCardFactory,
    RateCardLineFactory,
    policy_periodic_tasks,
)

pytestmark = pytest.mark.django_db

RATE_HEADER = (
    "card_name,legal_entity,currency,valid_from,valid_to,client_ref,contract_ref,tolerance_percent,"
    "role,bill_rate,cost_rate,unit\n"
)


@pytest.fixture
def importer():
    return get_user_model().objects.create_user(username="importer", password="x" * 12)


@pytest.fixture
def uk():
    return LegalEntityFactory(code="UK01")


def rate_csv(*rows: str) -> bytes:
    return (RATE_HEADER + "\n".join(rows) + "\n").encode()


def test_rate_card_rows_create_one_card_with_its_lines_and_history_names_user_and_file(uk, importer):
    # given
    data = rate_csv(
        "UK 2026,UK01,GBP,2026-01-01,,,,2.5,Manager,150,90,hour",
        "UK 2026,UK01,GBP,2026-01-01,,,,2.5,Analyst,80,40,hour",
    )

    # when
    report = governance_import(
        resource_name="rate_cards", data=data, format="csv", user=importer, dry_run=False, file_name="rates.csv"
    )

    # then
    assert report.errors == [] and report.new == 2 and report.committed
    card = RateCard.objects.get()
    assert (card.name, card.valid_to, card.tolerance_percent) == ("UK 2026", None, Decimal("2.5"))
    assert sorted(card.lines.values_list("role", flat=True)) == ["Analyst", "Manager"]
    card_history = card.history.get()
    assert card_history.history_user == importer and card_history.history_change_reason == "import of rates.csv"
    line_history = RateCardLine.history.all()
    assert {(h.history_user_id, h.history_change_reason) for h in line_history} == {
        (importer.pk, "import of rates.csv")
    }


def test_dry_run_reports_what_would_happen_and_stores_nothing(uk, importer):
    report = governance_import(
        resource_name="rate_cards",
        data=rate_csv("UK 2026,UK01,GBP,2026-01-01,,,,0,Manager,150,90,hour"),
        format="csv",
        user=importer,
        dry_run=True,
    )
    assert report.new == 1 and report.errors == [] and not report.committed
    assert RateCard.objects.count() == 0 and RateCardLine.objects.count() == 0


def test_reimport_updates_the_line_and_card_and_skips_unchanged_rows(uk, importer):
    # given
    first = rate_csv(
        "UK 2026,UK01,GBP,2026-01-01,,,,0,Manager,150,90,hour",
        "UK 2026,UK01,GBP,2026-01-01,,,,0,Analyst,80,40,hour",
    )
    governance_import(resource_name="rate_cards", data=first, format="csv", user=importer, dry_run=False)

    # when: the Manager rate changes, the Analyst row does not
    second = rate_csv(
        "UK 2026,UK01,GBP,2026-01-01,,,,0,Manager,160,90,hour",
        "UK 2026,UK01,GBP,2026-01-01,,,,0,Analyst,80,40,hour",
    )
    report = governance_import(resource_name="rate_cards", data=second, format="csv", user=importer, dry_run=False)

    # then
    assert (report.new, report.updated, report.skipped) == (0, 1, 1)
    assert RateCardLine.objects.get(role="Manager").bill_rate == Decimal("160")
    assert RateCard.objects.count() == 1


def test_one_bad_row_imports_nothing_and_every_error_has_its_row_number(uk, importer):
    # given: row 2 has a negative rate, row 3 an unknown entity, row 4 a date order error
    data = rate_csv(
        "UK 2026,UK01,GBP,2026-01-01,,,,0,Manager,150,90,hour",
        "UK 2026,UK01,GBP,2026-01-01,,,,0,Analyst,-80,40,hour",
        "X,ZZ99,GBP,2026-01-01,,,,0,Manager,150,90,hour",
        "Backwards,UK01,USD,2026-02-01,2026-01-01,,,0,Manager,150,90,hour",
    )

    # when
    report = governance_import(resource_name="rate_cards", data=data, format="csv", user=importer, dry_run=False)

    # then
    assert not report.committed
    by_row = {(error.row, error.field) for error in report.errors}
    assert {(2, "bill_rate"), (3, "legal_entity"), (4, "valid_to")} <= by_row
    assert 1 not in {error.row for error in report.errors}
    assert RateCard.objects.count() == 0 and RateCardLine.objects.count() == 0
    assert RateCard.history.count() == 0


def test_import_of_an_overlapping_card_is_rejected_naming_the_other_card(uk, importer):
    # given
    existing = RateCardFactory(name="UK 2026", legal_entity=uk, valid_from=datetime.date(2026, 1, 1))

    # when
    report = governance_import(
        resource_name="rate_cards",
        data=rate_csv("UK mid-year,UK01,GBP,2026-07-01,,,,0,Manager,150,90,hour"),
        format="csv",
        user=importer,
        dry_run=False,
    )

    # then
    [error] = report.errors
    assert error.row == 1 and error.field == "valid_from" and f"#{existing.pk}" in error.message
    assert RateCard.objects.count() == 1


def test_rows_of_one_card_must_agree_on_its_columns(uk, importer):
    data = rate_csv(
        "UK 2026,UK01,GBP,2026-01-01,2026-12-31,,,0,Manager,150,90,hour",
        "UK 2026,UK01,GBP,2026-01-01,2026-06-30,,,0,Analyst,80,40,hour",
    )
    report = governance_import(resource_name="rate_cards", data=data, format="csv", user=importer, dry_run=False)
    assert [(e.row, e.field) for e in report.errors] == [(2, "valid_to")] and "Row 1" in report.errors[0].message
    assert RateCard.objects.count() == 0


def test_rate_cards_round_trip_through_xlsx_and_json(uk, importer):
    # given: an exported card
    card = RateCardFactory(name="UK 2026", legal_entity=uk, client_ref="ACME")
    RateCardLineFactory(rate_card=card, role="Manager")
    dataset = RateCardResource().export()
    assert dataset.headers[:3] == ["card_name", "legal_entity", "currency"]
    xlsx, as_json = dataset.export("xlsx"), dataset.export("json")
    RateCard.objects.all().delete()

    # when / then
    for data, fmt in ((xlsx, "xlsx"), (as_json.encode(), "json")):
        report = governance_import(resource_name="rate_cards", data=data, format=fmt, user=importer, dry_run=True)
        assert report.errors == [] and report.new == 1, fmt
    report = governance_import(resource_name="rate_cards", data=xlsx, format="xlsx", user=importer, dry_run=False)
    assert report.committed and RateCard.objects.get().client_ref == "ACME"


def test_legal_entity_import_validates_every_row(importer):
    data = (
        b"code,name,country,base_currency,tax_jurisdiction,region\n"
        b"UK01,Firm UK,GB,GBP,GB,emea\n"
        b"us01,Firm US,USA,usd,US-NY,americas\n"
    )
    report = governance_import(resource_name="legal_entities", data=data, format="csv", user=importer, dry_run=False)
    assert {(e.row, e.field) for e in report.errors} == {(2, "code"), (2, "country"), (2, "base_currency")}
    assert LegalEntity.objects.count() == 0


def test_ownership_rule_import_resolves_names_and_slugs_and_rejects_conflicts_within_the_file(importer):
    # given
    CanonicalEntityFactory(name="time_entry")
    ConnectedSystemFactory(slug="erp")
    ConnectedSystemFactory(slug="psa")
    data = json.dumps(
        [
            {
                "entity": "time_entry",
                "field_group": "billing, hours",
                "owning_system": "erp",
                "conflict_action": "exception",
            },
            {"entity": "time_entry", "field_group": '["hours"]', "owning_system": "psa", "conflict_action": "ignore"},
            {"entity": "time_entry", "field_group": "", "owning_system": "nope", "conflict_action": "ignore"},
        ]
    ).encode()

    # when
    report = governance_import(resource_name="ownership_rules", data=data, format="json", user=importer, dry_run=False)

    # then: row 2 conflicts with row 1 (same import), row 3 names an unknown system
    assert {(e.row, e.field) for e in report.errors} == {(2, "field_group"), (3, "owning_system")}
    assert "hours" in next(e.message for e in report.errors if e.row == 2)
    assert OwnershipRule.objects.count() == 0


def test_sync_policy_import_keeps_the_schedule_in_step_and_checks_rules(uk, importer):
    # given
    header = "name,flow,legal_entity,trigger,cron,validation_rules,active\n"
    good = 'Nightly,time_expense_to_erp,UK01,schedule,0 2 * * *,"[{""rule"": ""entry_approved""}]",1\n'
    bad = 'Broken,milestone_billing,,schedule,,"[{""rule"": ""nope""}]",1\n'

    # when
    failed = governance_import(
        resource_name="sync_policies", data=(header + good + bad).encode(), format="csv", user=importer, dry_run=False
    )

    # then
    assert {(e.row, e.field) for e in failed.errors} == {(2, "cron"), (2, "validation_rules")}
    assert SyncPolicy.objects.count() == 0 and policy_periodic_tasks().count() == 0

    # when
    report = governance_import(
        resource_name="sync_policies", data=(header + good).encode(), format="csv", user=importer, dry_run=False
    )

    # then
    policy = SyncPolicy.objects.get()
    assert report.committed and policy.periodic_task.enabled and policy.legal_entity == uk
    assert policy.history.get().history_change_reason == "import of sync_policies.csv"


def test_unknown_format_or_resource_is_a_clear_error(importer):
    from integrationhub.errors import HubValidationError

    with pytest.raises(HubValidationError, match="csv, xlsx, json"):
        governance_import(resource_name="rate_cards", data=b"", format="xml", user=importer, dry_run=True)
    with pytest.raises(HubValidationError, match="rate_cards"):
        governance_import(resource_name="nothing", data=b"", format="csv", user=importer, dry_run=True)


# --- through the admin: dry-run diff, then confirm -------------------------------------------------------


def admin_import(client, model: str, content: bytes, name: str, fmt_index: int = 0):
    upload = SimpleUploadedFile(name, content, content_type="text/csv")
    return client.post(
        f"/admin/governance/{model}/import/", {"resource": 0, "format": fmt_index, "import_file": upload}
    )


def test_admin_import_shows_a_dry_run_then_stores_on_confirm_with_user_and_file_in_history(client_as, uk):
    # given
    client = client_as("analyst")
    data = rate_csv("UK 2026,UK01,GBP,2026-01-01,,,,0,Manager,150,90,hour")

    # when: step 1, the dry run
    response = admin_import(client, "ratecard", data, "uk-rates.csv")

    # then: a preview with a confirm form, and nothing stored yet
    assert response.status_code == 200 and "confirm_form" in response.context
    assert RateCard.objects.count() == 0

    # when: step 2, confirm
    confirm = response.context["confirm_form"].initial
    response = client.post("/admin/governance/ratecard/process_import/", confirm)

    # then
    assert response.status_code == 302
    card = RateCard.objects.get()
    history = card.history.get()
    assert history.history_user.username == "analyst-user" and history.history_change_reason == "import of uk-rates.csv"


def test_admin_import_with_errors_lists_them_by_row_and_offers_no_confirm(client_as, uk):
    # given
    client = client_as("analyst")
    RateCardFactory(name="UK 2026", legal_entity=uk, valid_from=datetime.date(2026, 1, 1))
    data = rate_csv(
        "Overlap,UK01,GBP,2026-03-01,,,,0,Manager,150,90,hour",
        "Fine,UK01,USD,2026-03-01,,,,0,Manager,-1,90,hour",
    )

    # when
    response = admin_import(client, "ratecard", data, "bad.csv")

    # then
    result = response.context["result"]
    assert "confirm_form" not in response.context
    assert sorted(row.number for row in result.invalid_rows) == [1, 2]
    assert b"UK 2026" in response.content
    assert RateCard.objects.count() == 1


def test_auditor_cannot_import_and_nothing_is_stored(client_as, uk):
    # given
    client = client_as("auditor")

    # when
    response = admin_import(
        client, "ratecard", rate_csv("UK 2026,UK01,GBP,2026-01-01,,,,0,Manager,150,90,hour"), "r.csv"
    )

    # then
    assert response.status_code == 403 and RateCard.objects.count() == 0


def test_analyst_cannot_import_legal_entities(client_as):
    client = client_as("analyst")
    data = b"code,name,country,base_currency,tax_jurisdiction,region\nUK01,Firm UK,GB,GBP,GB,emea\n"
    response = admin_import(client, "legalentity", data, "le.csv")
    assert response.status_code == 403 and LegalEntity.objects.count() == 0


def test_admin_export_of_rate_cards_is_one_row_per_line(client_as, uk):
    # given
    card = RateCardFactory(legal_entity=uk)
    RateCardLineFactory(rate_card=card, role="Manager")
    RateCardLineFactory(rate_card=card, role="Analyst")
    client = client_as("auditor")

    # when
    response = client.post("/admin/governance/ratecard/export/", {"format": 0, "resource": 0, **{
        f"ratecardresource_{name}": True for name in ("card_name", "legal_entity", "role", "bill_rate")
    }})  # fmt: skip

    # then
    assert response.status_code == 200
    rows = tablib.Dataset().load(io.StringIO(response.content.decode()), format="csv")
    assert sorted(rows["role"]) == ["Analyst", "Manager"] and set(rows["legal_entity"]) == {"UK01"}
