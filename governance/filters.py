"""django-filter filtersets of the governance API."""

from __future__ import annotations

import datetime

import django_filters
from django.db.models import QuerySet

from governance.choices import ConflictAction, Flow, Region, Trigger
from governance.models import LegalEntity, OwnershipRule, RateCard, SyncPolicy
from governance.selectors import rate_card_valid_on


class LegalEntityFilterSet(django_filters.FilterSet):
    region = django_filters.ChoiceFilter(choices=Region.choices)

    class Meta:
        model = LegalEntity
        fields = ["code", "country", "base_currency", "region"]


class OwnershipRuleFilterSet(django_filters.FilterSet):
    entity = django_filters.CharFilter(field_name="entity__name", help_text="Canonical entity name, e.g. time_entry.")
    owning_system = django_filters.CharFilter(field_name="owning_system__slug", help_text="Connected system slug.")
    conflict_action = django_filters.ChoiceFilter(choices=ConflictAction.choices)

    class Meta:
        model = OwnershipRule
        fields = ["entity", "owning_system", "lifecycle_stage", "conflict_action"]


class RateCardFilterSet(django_filters.FilterSet):
    legal_entity = django_filters.CharFilter(field_name="legal_entity__code", help_text="Legal entity code.")
    valid_on = django_filters.DateFilter(method="filter_valid_on", help_text="Cards valid on this day (YYYY-MM-DD).")
    role = django_filters.CharFilter(field_name="lines__role", distinct=True, help_text="Cards listing this role.")

    class Meta:
        model = RateCard
        fields = ["legal_entity", "currency", "client_ref", "contract_ref", "valid_on", "role"]

    def filter_valid_on(self, queryset: QuerySet[RateCard], name: str, value: datetime.date) -> QuerySet[RateCard]:
        return queryset.filter(rate_card_valid_on(on_date=value)) if value else queryset


class SyncPolicyFilterSet(django_filters.FilterSet):
    flow = django_filters.ChoiceFilter(choices=Flow.choices)
    trigger = django_filters.ChoiceFilter(choices=Trigger.choices)
    legal_entity = django_filters.CharFilter(field_name="legal_entity__code", help_text="Legal entity code.")

    class Meta:
        model = SyncPolicy
        fields = ["flow", "trigger", "legal_entity", "active"]
