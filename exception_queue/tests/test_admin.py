"""The exception-queue admin list shows the open items per category."""

from __future__ import annotations

import pytest

from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem

pytestmark = pytest.mark.django_db


def test_the_item_list_shows_open_counts_per_category(client_as):
    # given two open validation items, one open dead letter and one rejected validation item
    for category, state in [
        (ExceptionCategory.VALIDATION, ExceptionState.OPEN),
        (ExceptionCategory.VALIDATION, ExceptionState.OPEN),
        (ExceptionCategory.DEAD_LETTER, ExceptionState.OPEN),
        (ExceptionCategory.VALIDATION, ExceptionState.REJECTED),
    ]:
        ExceptionItem.objects.create(category=category, state=state, reason="r")
    # when a finance approver opens the list
    page = client_as("finance_approver").get("/admin/exception_queue/exceptionitem/")
    # then the open counts per category are shown, zero included
    assert page.status_code == 200
    counts = {row["category"]: row["count"] for row in page.context["category_counts"]}
    assert counts[ExceptionCategory.VALIDATION] == 2
    assert counts[ExceptionCategory.DEAD_LETTER] == 1
    assert counts[ExceptionCategory.APPROVAL_REQUIRED] == 0
    assert '<strong data-category="validation">2</strong>' in page.content.decode()
