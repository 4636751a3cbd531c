"""django-filter filtersets of the reconciliation API."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from integrationhub.api.filters import IdFilter
from reconciliation.choices import RowKind, RunStatus
from reconciliation.models import ReconciliationRow, ReconciliationRun


class ReconciliationRunFilterSet(django_filters.FilterSet):
    legal_entity = django_filters.CharFilter(field_name="legal_entity__code", help_text="Legal entity code.")
    period = django_filters.CharFilter(help_text="A month, YYYY-MM.")
    status = django_filters.MultipleChoiceFilter(choices=RunStatus.choices)

    class Meta:
        model = ReconciliationRun
        fields = ["legal_entity", "period", "status"]


class ReconciliationRowFilterSet(django_filters.FilterSet):
    run = IdFilter(field_name="run_id", help_text="The run's id (its rows only).")
    legal_entity = django_filters.CharFilter(field_name="legal_entity__code", help_text="Legal entity code.")
    period = django_filters.CharFilter(help_text="A month, YYYY-MM.")
    kind = django_filters.ChoiceFilter(choices=RowKind.choices)
    project = django_filters.CharFilter(method="filter_project", help_text="The project's id or part of its name.")
    person = django_filters.CharFilter(method="filter_person", help_text="The person's id or part of their name.")
    only_differences = django_filters.BooleanFilter(method="filter_differences", help_text="Rows with a difference.")

    class Meta:
        model = ReconciliationRow
        fields = ["run", "legal_entity", "period", "kind"]

    def filter_project(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(project=value) | Q(project_name__icontains=value))

    def filter_person(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(person=value) | Q(person_name__icontains=value))

    def filter_differences(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return queryset
        differing = ~Q(unexplained_amount=0, unexplained_hours=0)
        return queryset.filter(differing) if value else queryset.exclude(differing)
