"""Serializers of the reconciliation API."""

from __future__ import annotations

from rest_framework import serializers

from governance.models import LegalEntity
from reconciliation.models import ReconciliationRow, ReconciliationRun
from reconciliation.services import ROW_FIGURES


class ReconciliationRunSerializer(serializers.ModelSerializer):
    legal_entity: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="code", read_only=True)
    started_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    failed_system: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )

    class Meta:
        model = ReconciliationRun
        fields = [
            "id",
            "legal_entity",
            "period",
            "period_start",
            "period_end",
            "status",
            "trigger",
            "started_by",
            "correlation_id",
            "created_at",
            "started_at",
            "finished_at",
            "failed_system",
            "error",
            "systems",
            "figures",
            "differences",
            "unexplained_amount",
        ]
        read_only_fields = fields


class ReconciliationRowSerializer(serializers.ModelSerializer):
    legal_entity: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = ReconciliationRow
        fields = [
            "id",
            "run",
            "legal_entity",
            "period",
            "kind",
            "project",
            "project_name",
            "person",
            "person_name",
            "currency",
            *ROW_FIGURES,
            "queue_reasons",
            "entries",
            "exception_item",
        ]
        read_only_fields = fields


class ReconciliationRunStartSerializer(serializers.Serializer):
    """Start a run: the legal entity (its code) and the period (a month, YYYY-MM)."""

    legal_entity = serializers.SlugRelatedField(slug_field="code", queryset=LegalEntity.objects.all())
    period = serializers.RegexField(r"^\d{4}-(0[1-9]|1[0-2])$", max_length=7, help_text="A month, YYYY-MM.")
