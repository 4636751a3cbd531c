"""Rows edited with a parent show in the parent's compare (added, removed, changed), and the configuration history
exports to CSV with the feed's filters."""

from __future__ import annotations

import csv
import datetime
import io

import pytest
from django.urls import reverse

from governance.models import LegalEntity, RateCard, RateCardLine
from integrationhub.history import history_diff

pytestmark = pytest.mark.django_db


def _card() -> RateCard:
    entity = LegalEntity.objects.create(
        code="US01", name="Firm US", country="US", base_currency="USD", tax_jurisdiction="US-NY", region="americas"
    )
    return RateCard.objects.create(
        name="US 2026", legal_entity=entity, currency="USD", valid_from=datetime.date(2026, 1, 1)
    )


def test_the_parent_compare_lists_lines_added_removed_and_changed_in_each_version():
    card = _card()
    kept = RateCardLine.objects.create(rate_card=card, role="Analyst", bill_rate="170.00", cost_rate="90.00")
    gone = RateCardLine.objects.create(rate_card=card, role="Intern", bill_rate="60.00", cost_rate="30.00")
    card.save()  # version 2: as the admin saves the card, then its changed lines
    kept.bill_rate, kept.cost_rate = "250.00", "95.00"
    kept.save()
    gone.delete()
    RateCardLine.objects.create(rate_card=card, role="Partner", bill_rate="400.00", cost_rate="200.00")
    first, second = card.history.order_by("history_date", "history_id")
    diff = history_diff(
        model_admin_or_model=RateCard, obj=card, from_history_id=first.history_id, to_history_id=second.history_id
    )
    assert diff.changes == []
    by_row = {(c.row, c.action): c for c in diff.child_changes}
    assert set(by_row) == {("Analyst", "changed"), ("Intern", "removed"), ("Partner", "added")}
    changed = {(f.name, f.old, f.new) for f in by_row["Analyst", "changed"].changes}
    assert changed == {("bill_rate", "170.00", "250.00"), ("cost_rate", "90.00", "95.00")}
    assert ("bill_rate", "—", "400.00") in {(f.name, f.old, f.new) for f in by_row["Partner", "added"].changes}
    # and comparing a version with itself lists nothing
    assert (
        history_diff(
            model_admin_or_model=RateCard, obj=card, from_history_id=second.history_id, to_history_id=second.history_id
        ).child_changes
        == []
    )


def test_the_history_csv_export_follows_the_filters_and_refuses_a_bad_date(admin_client):
    card = _card()
    line = RateCardLine.objects.create(rate_card=card, role="Analyst", bill_rate="170.00", cost_rate="90.00")
    line.bill_rate = "180.00"
    line.save()
    url = reverse("hub-change-history-csv")
    response = admin_client.get(url, {"type": "governance.ratecardline"})
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["field"], r["old_value"], r["new_value"]) for r in rows if r["field"]] == [
        ("Bill rate", "170.00", "180.00")
    ]
    assert {r["record_type"] for r in rows} == {"Rate card line"}
    refused = admin_client.get(url, {"since": "2026-13-45"})
    assert refused.status_code == 400
    assert "'since' must be a date as YYYY-MM-DD" in refused.content.decode()
