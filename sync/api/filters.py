"""django-filter filtersets of the sync API."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from integrationhub.api.filters import IdFilter, UtcDateTimeFilter
from sync.choices import AttemptOutcome, MessageDirection, MessageStatus
from sync.models import DeliveryAttempt, FileDrop, Message


class MessageFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=MessageStatus.choices)
    direction = django_filters.ChoiceFilter(choices=MessageDirection.choices)
    system = django_filters.CharFilter(field_name="system__slug", help_text="Source system slug.")
    entity = django_filters.CharFilter(help_text="Canonical entity name, e.g. time_entry.")
    event_type = django_filters.CharFilter()
    correlation_id = django_filters.CharFilter()
    idempotency_key = django_filters.CharFilter()
    external_id = django_filters.CharFilter(
        method="filter_external_id",
        help_text="The record's id in the source (canonical id or payload id) or at a target (delivery).",
    )
    received_after = UtcDateTimeFilter(field_name="received_at", lookup_expr="gte")
    received_before = UtcDateTimeFilter(field_name="received_at", lookup_expr="lt")
    legal_entity = django_filters.CharFilter(field_name="legal_entity__code", help_text="Legal entity code.")

    class Meta:
        model = Message
        fields = ["status", "direction", "system", "entity", "event_type", "correlation_id", "idempotency_key"]

    def filter_external_id(self, queryset: QuerySet[Message], name: str, value: str) -> QuerySet[Message]:
        if not value:
            return queryset
        ids = Message.objects.filter(
            Q(canonical_id=value) | Q(raw_payload__id=value) | Q(deliveries__external_id=value)
        ).values("id")
        return queryset.filter(id__in=ids)


class DeliveryAttemptFilterSet(django_filters.FilterSet):
    outcome = django_filters.MultipleChoiceFilter(choices=AttemptOutcome.choices)
    message = IdFilter(field_name="delivery__message_id")
    delivery = IdFilter(field_name="delivery_id")
    target_system = django_filters.CharFilter(field_name="system__slug")
    correlation_id = django_filters.CharFilter()
    status_code = django_filters.NumberFilter(min_value=100, max_value=599)
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = DeliveryAttempt
        fields = ["outcome", "message", "delivery", "target_system", "correlation_id", "status_code"]


class FileDropFilterSet(django_filters.FilterSet):
    system = django_filters.CharFilter(field_name="system__slug")

    class Meta:
        model = FileDrop
        fields = ["system", "entity", "status"]
