"""Reads of the connectors app."""

from __future__ import annotations

from django.db.models import QuerySet

from connectors.base import ConnectorSpec
from connectors.models import ConnectedSystem
from connectors.registry import registry
from integrationhub.errors import HubNotFoundError


def connected_system_list(*, role: str | None = None, state: str | None = None) -> QuerySet[ConnectedSystem]:
    """Connected systems with their legal entities, optionally filtered by role and state."""
    queryset = ConnectedSystem.objects.prefetch_related("legal_entities")
    if role:
        queryset = queryset.filter(role=role)
    if state:
        queryset = queryset.filter(state=state)
    return queryset


def connected_system_get(*, slug: str) -> ConnectedSystem:
    """One system by slug, or a HubNotFoundError naming the slug."""
    try:
        return ConnectedSystem.objects.get(slug=slug)
    except ConnectedSystem.DoesNotExist:
        raise HubNotFoundError(f"No connected system with slug '{slug}'.") from None


def connector_type_list() -> list[ConnectorSpec]:
    """Every registered connector type, by name."""
    return registry.specs()


def connector_type_get(*, name: str) -> ConnectorSpec:
    """One connector type's spec; HubNotFoundError when it is not registered."""
    return registry.get(name).spec()
