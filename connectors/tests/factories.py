"""factory_boy factories of the connectors app."""

from __future__ import annotations

import factory
from django.utils import timezone

from connectors.choices import SystemRole
from connectors.models import ConnectedSystem


class ConnectedSystemFactory(factory.django.DjangoModelFactory):
    """A generic REST system with an API key; pass base_url to point it at a local server."""

    class Meta:
        model = ConnectedSystem

    name = factory.Sequence(lambda n: f"System {n}")
    slug = factory.Sequence(lambda n: f"system-{n}")
    role = SystemRole.PSA
    connector_type = "generic_rest"
    base_url = "http://127.0.0.1:9"
    settings = factory.LazyFunction(lambda: {"auth_mode": "api_key"})
    credentials = factory.LazyFunction(lambda: {"api_key": "factory-api-key-0001"})
    credentials_updated_at = factory.LazyFunction(timezone.now)
