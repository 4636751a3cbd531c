"""factory_boy factories of the governance app (plus the few connector and mapping rows its tests need)."""

from __future__ import annotations

import datetime
from decimal import Decimal

import factory

from connectors.models import ConnectedSystem
from governance.choices import Flow, Region, Trigger
from governance.models import LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from mappings.models import CanonicalEntity


class LegalEntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LegalEntity
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"LE{n:02d}")
    name = factory.LazyAttribute(lambda o: f"Entity {o.code}")
    country = "GB"
    base_currency = "GBP"
    tax_jurisdiction = "GB"
    region = Region.EMEA


class RateCardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RateCard

    name = factory.Sequence(lambda n: f"Rate card {n}")
    legal_entity = factory.SubFactory(LegalEntityFactory)
    currency = "GBP"
    valid_from = datetime.date(2026, 1, 1)
    valid_to = None
    tolerance_percent = Decimal("0.00")


class RateCardLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RateCardLine

    rate_card = factory.SubFactory(RateCardFactory)
    role = "Manager"
    bill_rate = Decimal("150.00")
    cost_rate = Decimal("90.00")


class CanonicalEntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CanonicalEntity
        django_get_or_create = ("name",)

    name = "time_entry"


class ConnectedSystemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConnectedSystem
        django_get_or_create = ("slug",)

    name = factory.LazyAttribute(lambda o: o.slug.upper())
    slug = factory.Sequence(lambda n: f"system-{n}")
    role = "erp"
    connector_type = "generic_rest"
    base_url = "http://127.0.0.1:9/"


class OwnershipRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OwnershipRule

    entity = factory.SubFactory(CanonicalEntityFactory)
    field_group = factory.LazyFunction(list)
    lifecycle_stage = ""
    owning_system = factory.SubFactory(ConnectedSystemFactory)


class SyncPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncPolicy

    name = factory.Sequence(lambda n: f"Policy {n}")
    flow = Flow.TIME_EXPENSE_TO_ERP
    trigger = Trigger.EVENT
    validation_rules = factory.LazyFunction(list)


def policy_periodic_tasks():
    """The beat entries that sync policies own (other apps install their own schedules)."""
    from django_celery_beat.models import PeriodicTask

    from governance.services import SYNC_POLICY_TASK

    return PeriodicTask.objects.filter(task=SYNC_POLICY_TASK)
