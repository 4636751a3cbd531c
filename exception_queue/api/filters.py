"""django-filter filtersets of the exception-queue API."""

from __future__ import annotations

import datetime

import django_filters
from django.db.models import QuerySet
from django.utils import timezone

from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from integrationhub.api.filters import HoursFilter, IdFilter, UtcDateTimeFilter


class ExceptionItemFilterSet(django_filters.FilterSet):
    category = django_filters.MultipleChoiceFilter(choices=ExceptionCategory.choices)
    state = django_filters.MultipleChoiceFilter(choices=ExceptionState.choices)
    system = django_filters.CharFilter(field_name="system__slug", help_text="Connected system slug.")
    legal_entity = django_filters.CharFilter(field_name="legal_entity__code", help_text="Legal entity code.")
    currency = django_filters.CharFilter()
    amount_min = django_filters.NumberFilter(field_name="amount", lookup_expr="gte")
    amount_max = django_filters.NumberFilter(field_name="amount", lookup_expr="lte")
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    older_than_hours = HoursFilter(method="filter_older_than", help_text="Items waiting at least this many hours.")
    newer_than_hours = HoursFilter(method="filter_newer_than", help_text="Items waiting less than this many hours.")
    message = IdFilter(field_name="message_id")
    correlation_id = django_filters.CharFilter(field_name="message__correlation_id")

    class Meta:
        model = ExceptionItem
        fields = ["category", "state", "system", "legal_entity", "currency", "message"]

    def filter_older_than(self, queryset: QuerySet[ExceptionItem], name: str, value: float) -> QuerySet:
        return queryset.filter(created_at__lte=timezone.now() - datetime.timedelta(hours=float(value)))

    def filter_newer_than(self, queryset: QuerySet[ExceptionItem], name: str, value: float) -> QuerySet:
        return queryset.filter(created_at__gt=timezone.now() - datetime.timedelta(hours=float(value)))
