"""factory_boy factories of the sandbox app."""

from __future__ import annotations

import factory
from django.utils import timezone

from sandbox.choices import SandboxSystem
from sandbox.models import SandboxRecord


class SandboxRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SandboxRecord

    system = SandboxSystem.ERP
    object_type = "clients"
    external_id = factory.Sequence(lambda n: str(900000 + n))
    data = factory.LazyFunction(dict)
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyFunction(timezone.now)
