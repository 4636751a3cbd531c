"""API serializers of the workflows app."""

from __future__ import annotations

from rest_framework import serializers

from connectors.choices import SystemRole
from connectors.models import ConnectedSystem
from governance.models import LegalEntity
from workflows.models import ResourceLink


class ResourceLinkSerializer(serializers.ModelSerializer):
    """A PSA person and the ERP employee their time is booked to; systems by slug, the legal entity by code
    (null: every legal entity the ERP serves)."""

    psa_system = serializers.SlugRelatedField(
        slug_field="slug", queryset=ConnectedSystem.objects.filter(role=SystemRole.PSA)
    )
    erp_system = serializers.SlugRelatedField(
        slug_field="slug", queryset=ConnectedSystem.objects.filter(role=SystemRole.ERP)
    )
    legal_entity = serializers.SlugRelatedField(
        slug_field="code", queryset=LegalEntity.objects.all(), allow_null=True, required=False
    )

    class Meta:
        model = ResourceLink
        fields = [
            "id",
            "psa_system",
            "person_ref",
            "person_name",
            "erp_system",
            "legal_entity",
            "employee_ref",
            "employee_name",
            "notes",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        # The model's constraints (one link per person, ERP and entity) are checked by its full_clean in the
        # service, which names the fields; DRF's own unique-together check would not know the NULL entity case.
        validators: list = []
