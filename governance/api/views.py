"""API views of the governance app: parse, call one service, render."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from django.db.models import Model
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from governance import selectors, services
from governance.api.serializers import (
    LegalEntitySerializer,
    OwnershipRuleSerializer,
    RateCardSerializer,
    RateQuoteSerializer,
    SyncPolicySerializer,
)
from governance.filters import LegalEntityFilterSet, OwnershipRuleFilterSet, RateCardFilterSet, SyncPolicyFilterSet
from governance.models import LegalEntity, OwnershipRule, RateCard, SyncPolicy
from integrationhub.errors import HubValidationError
from integrationhub.scoping import EntityScopedViewSetMixin

CHANGE_REASON_HEADER = "X-Change-Reason"
DEFAULT_CHANGE_REASON = "changed through the API"


def change_reason(request: Request) -> str:
    """The history change reason of an API write: the X-Change-Reason header, else a default."""
    return (request.headers.get(CHANGE_REASON_HEADER) or "").strip()[: services.REASON_MAX_LENGTH] or (
        DEFAULT_CHANGE_REASON
    )


class ServiceModelViewSet(viewsets.ModelViewSet):
    """A ModelViewSet whose writes go through the app's services (which run full_clean and record history)."""

    # Serializer fields that are not model attributes and are handed to the service separately.
    extra_fields: ClassVar[tuple[str, ...]] = ()

    def save_instance(self, instance: Any, extra: dict[str, Any], *, user: Any, reason: str) -> Any:
        raise NotImplementedError

    def delete_instance(self, instance: Any, *, user: Any, reason: str) -> None:
        raise NotImplementedError

    def _write(self, serializer: serializers.BaseSerializer, instance: Model) -> None:
        data = dict(serializer.validated_data)
        extra = {name: data.pop(name) for name in self.extra_fields if name in data}
        for name, value in data.items():
            setattr(instance, name, value)
        serializer.instance = self.save_instance(
            instance, extra, user=self.request.user, reason=change_reason(self.request)
        )

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        self._write(serializer, self.get_queryset().model())

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        assert serializer.instance is not None  # an update always has its instance
        self._write(serializer, serializer.instance)

    def perform_destroy(self, instance: Any) -> None:
        self.delete_instance(instance, user=self.request.user, reason=change_reason(self.request))


class LegalEntityViewSet(ServiceModelViewSet):
    """Legal entities of the firm."""

    queryset = LegalEntity.objects.all()
    serializer_class = LegalEntitySerializer
    filterset_class = LegalEntityFilterSet
    search_fields = ["code", "name", "tax_jurisdiction"]
    ordering_fields = ["code", "name", "country", "updated_at"]

    def save_instance(self, instance: LegalEntity, extra: dict[str, Any], *, user: Any, reason: str) -> LegalEntity:
        return services.legal_entity_save(legal_entity=instance, user=user, reason=reason)

    def delete_instance(self, instance: LegalEntity, *, user: Any, reason: str) -> None:
        services.legal_entity_delete(legal_entity=instance, user=user, reason=reason)


class OwnershipRuleViewSet(ServiceModelViewSet):
    """Which system owns which fields of a canonical entity."""

    queryset = OwnershipRule.objects.select_related("entity", "owning_system")
    serializer_class = OwnershipRuleSerializer
    filterset_class = OwnershipRuleFilterSet
    search_fields = ["entity__name", "owning_system__name", "owning_system__slug", "lifecycle_stage", "notes"]
    ordering_fields = ["entity__name", "lifecycle_stage", "updated_at", "id"]

    def save_instance(self, instance: OwnershipRule, extra: dict[str, Any], *, user: Any, reason: str) -> OwnershipRule:
        return services.ownership_rule_save(rule=instance, user=user, reason=reason)

    def delete_instance(self, instance: OwnershipRule, *, user: Any, reason: str) -> None:
        services.ownership_rule_delete(rule=instance, user=user, reason=reason)


class RateCardViewSet(EntityScopedViewSetMixin, ServiceModelViewSet):
    """Rate cards with their lines, and the rate lookup the sync engine uses."""

    queryset = RateCard.objects.select_related("legal_entity").prefetch_related("lines")
    serializer_class = RateCardSerializer
    filterset_class = RateCardFilterSet
    search_fields = ["name", "legal_entity__code", "client_ref", "contract_ref", "lines__role"]
    ordering_fields = ["legal_entity__code", "currency", "valid_from", "valid_to", "name", "updated_at"]
    extra_fields = ("lines",)

    def save_instance(self, instance: RateCard, extra: dict[str, Any], *, user: Any, reason: str) -> RateCard:
        card = services.rate_card_save(rate_card=instance, lines=extra.get("lines"), user=user, reason=reason)
        # Re-read so the response shows the lines as stored, not a stale prefetch.
        return self.get_queryset().get(pk=card.pk)

    def delete_instance(self, instance: RateCard, *, user: Any, reason: str) -> None:
        services.rate_card_delete(rate_card=instance, user=user, reason=reason)

    @extend_schema(
        parameters=[
            OpenApiParameter("legal_entity", str, required=True, description="Legal entity code, e.g. UK01."),
            OpenApiParameter("role", str, required=True, description="Canonical role name."),
            OpenApiParameter("date", datetime.date, required=True, description="Work date, YYYY-MM-DD."),
            OpenApiParameter("client", str, description="Client id, for a client override."),
            OpenApiParameter("contract", str, description="Contract id, for a contract override."),
            OpenApiParameter("currency", str, description="Only cards in this currency."),
        ],
        responses=RateQuoteSerializer,
    )
    @action(detail=False, methods=["get"], url_path="lookup", serializer_class=RateQuoteSerializer, filter_backends=[])
    def lookup(self, request: Request) -> Response:
        """The rate of a role at a legal entity on a day: ?legal_entity=UK01&role=Manager&date=2026-05-01."""
        params = request.query_params
        missing = [name for name in ("legal_entity", "role", "date") if not params.get(name, "").strip()]
        if missing:
            raise HubValidationError(
                f"Give {', '.join(missing)} as query parameters, for example "
                "?legal_entity=UK01&role=Manager&date=2026-05-01.",
                errors=[{"field": name, "message": "This parameter is required."} for name in missing],
            )
        try:
            on_date = datetime.date.fromisoformat(params["date"].strip())
        except ValueError:
            raise HubValidationError(
                f"date {params['date']!r} is not a date; use YYYY-MM-DD.",
                errors=[{"field": "date", "message": "Use YYYY-MM-DD."}],
            ) from None
        quote = selectors.rate_for(
            legal_entity=params["legal_entity"].strip(),
            role=params["role"].strip(),
            on_date=on_date,
            client=params.get("client", "").strip() or None,
            contract=params.get("contract", "").strip() or None,
            currency=params.get("currency", "").strip() or None,
        )
        return Response(RateQuoteSerializer(quote).data)


class SyncPolicyViewSet(ServiceModelViewSet):
    """How each flow runs; saving keeps the policy's beat schedule in step."""

    queryset = SyncPolicy.objects.select_related("legal_entity", "periodic_task")
    serializer_class = SyncPolicySerializer
    filterset_class = SyncPolicyFilterSet
    search_fields = ["name", "flow", "legal_entity__code"]
    ordering_fields = ["name", "flow", "trigger", "updated_at"]

    def save_instance(self, instance: SyncPolicy, extra: dict[str, Any], *, user: Any, reason: str) -> SyncPolicy:
        return services.sync_policy_save(policy=instance, user=user, reason=reason)

    def delete_instance(self, instance: SyncPolicy, *, user: Any, reason: str) -> None:
        services.sync_policy_delete(policy=instance, user=user, reason=reason)
