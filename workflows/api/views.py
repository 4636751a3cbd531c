"""API views of the workflows app: parse, call one service, render."""

from __future__ import annotations

from typing import Any

import django_filters

from governance.api.views import ServiceModelViewSet
from integrationhub.scoping import EntityScopedViewSetMixin
from workflows.api.serializers import ResourceLinkSerializer
from workflows.models import ResourceLink
from workflows.resource_links import resource_link_delete, resource_link_save, resource_links_list


class ResourceLinkFilterSet(django_filters.FilterSet):
    psa_system = django_filters.CharFilter(field_name="psa_system__slug", help_text="PSA system slug.")
    erp_system = django_filters.CharFilter(field_name="erp_system__slug", help_text="ERP system slug.")
    legal_entity = django_filters.CharFilter(field_name="legal_entity__code", help_text="Legal entity code.")

    class Meta:
        model = ResourceLink
        fields = ["psa_system", "erp_system", "legal_entity", "person_ref", "employee_ref"]


class ResourceLinkViewSet(EntityScopedViewSetMixin, ServiceModelViewSet):
    """Resources: which ERP employee books each PSA person's time, per ERP and legal entity. Writes are
    recorded in the history and the audit trail (X-Change-Reason names why) and post the entries held for the
    person."""

    queryset = resource_links_list()
    serializer_class = ResourceLinkSerializer
    filterset_class = ResourceLinkFilterSet
    search_fields = ["person_ref", "person_name", "employee_ref", "employee_name"]
    ordering_fields = ["person_name", "person_ref", "employee_ref", "updated_at"]

    def save_instance(self, instance: ResourceLink, extra: dict[str, Any], *, user: Any, reason: str) -> ResourceLink:
        return resource_link_save(link=instance, user=user, reason=reason)

    def delete_instance(self, instance: ResourceLink, *, user: Any, reason: str) -> None:
        resource_link_delete(link=instance, user=user, reason=reason)
