"""Legal-entity scoping: a regional user sees and edits only the records of their legal entities.

A user's entities come from UserLegalEntityScope (none: enterprise-wide); an API key's legal entity
narrows them further. Scoped models have a `legal_entity` foreign key (RateCard, ValueMap,
MappingSet) or reach one through `entity_scope_field` (FieldRule: "mapping_set__legal_entity",
ValueMapEntry: "value_map__legal_entity"); records with no legal entity are enterprise-level:
visible to everyone, editable only by unrestricted users. The admin and the API share these
functions through the two mixins at the end.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Model, Q, QuerySet
from rest_framework import exceptions

from integrationhub.models import ApiKey, UserLegalEntityScope

UNRESTRICTED = None
SCOPE_FIELD = "legal_entity"


def entity_scope_of(user: Any, api_key: ApiKey | None = None) -> frozenset[int] | None:
    """The legal-entity ids `user` (through `api_key`, if any) is limited to; None when unrestricted."""
    entities: frozenset[int] | None = UNRESTRICTED
    if user is not None and getattr(user, "is_authenticated", False) and not user.is_superuser:
        scope = UserLegalEntityScope.objects.filter(user=user).first()
        if scope is not None:
            ids = frozenset(scope.legal_entities.values_list("pk", flat=True))
            entities = ids or UNRESTRICTED
    if api_key is not None and api_key.legal_entity_id is not None:
        key_entity = frozenset({api_key.legal_entity_id})
        entities = key_entity if entities is None else entities & key_entity
    return entities


def _api_key(request: Any) -> ApiKey | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKey) else None


def _field_is_nullable(model: type[Model], field: str) -> bool:
    """Whether the legal-entity field at the end of `field` (e.g. "mapping_set__legal_entity") may be null."""
    *hops, last = field.split("__")
    for hop in hops:
        related = model._meta.get_field(hop).related_model
        assert isinstance(related, type), f"{hop} is not a relation"
        model = related
    return bool(model._meta.get_field(last).null)


def entity_id_of(obj: Any, field: str = SCOPE_FIELD) -> int | None:
    """The legal-entity id of `obj` along `field`, e.g. a field rule's "mapping_set__legal_entity"."""
    *hops, last = field.split("__")
    for hop in hops:
        obj = getattr(obj, hop, None)
        if obj is None:
            return None
    return getattr(obj, f"{last}_id", None)


def records_visible_to(
    user: Any, queryset: QuerySet, *, api_key: ApiKey | None = None, field: str = SCOPE_FIELD
) -> QuerySet:
    """The records of `queryset` the user may see: their entities' records and enterprise-level ones."""
    entities = entity_scope_of(user, api_key)
    if entities is UNRESTRICTED:
        return queryset
    condition = Q(**{f"{field}__in": entities})
    if _field_is_nullable(queryset.model, field):
        condition |= Q(**{f"{field}__isnull": True})
    return queryset.filter(condition)


def entity_editable(user: Any, legal_entity_id: int | None, *, api_key: ApiKey | None = None) -> bool:
    """Whether the user may create, change or delete a record of this legal entity (None: enterprise-level)."""
    entities = entity_scope_of(user, api_key)
    if entities is UNRESTRICTED:
        return True
    return legal_entity_id is not None and legal_entity_id in entities


def _entity_id_in(data: dict[str, Any], field: str) -> int | None:
    """The legal-entity id a serializer's validated data points at along `field`."""
    first, _, rest = field.partition("__")
    value = data.get(first)
    if rest:
        return entity_id_of(value, rest) if value is not None else None
    return getattr(value, "pk", value)


class EntityScopedViewSetMixin:
    """Put first in a viewset's bases: filters the queryset and refuses writes outside the user's entities."""

    entity_scope_field = SCOPE_FIELD

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()  # type: ignore[misc]
        request = self.request  # type: ignore[attr-defined]
        return records_visible_to(request.user, queryset, api_key=_api_key(request), field=self.entity_scope_field)

    def check_object_permissions(self, request: Any, obj: Any) -> None:
        super().check_object_permissions(request, obj)  # type: ignore[misc]
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            self._entity_check(request, entity_id_of(obj, self.entity_scope_field))

    def _entity_check(self, request: Any, legal_entity_id: int | None) -> None:
        if not entity_editable(request.user, legal_entity_id, api_key=_api_key(request)):
            what = "enterprise-level records" if legal_entity_id is None else "records of this legal entity"
            raise exceptions.PermissionDenied(f"Your legal-entity scope does not let you change {what}.")

    def perform_create(self, serializer: Any) -> None:
        self._entity_check(self.request, _entity_id_in(serializer.validated_data, self.entity_scope_field))  # type: ignore[attr-defined]
        super().perform_create(serializer)  # type: ignore[misc]

    def perform_update(self, serializer: Any) -> None:
        if self.entity_scope_field.split("__")[0] in serializer.validated_data:  # moving it to another entity
            self._entity_check(self.request, _entity_id_in(serializer.validated_data, self.entity_scope_field))  # type: ignore[attr-defined]
        super().perform_update(serializer)  # type: ignore[misc]


class EntityScopedAdminMixin:
    """Put first in a ModelAdmin's bases: the same rules as the API in the list, the forms and the actions."""

    entity_scope_field = SCOPE_FIELD

    def get_queryset(self, request: Any) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return records_visible_to(request.user, queryset, field=self.entity_scope_field)

    def _editable(self, request: Any, obj: Any) -> bool:
        return obj is None or entity_editable(request.user, entity_id_of(obj, self.entity_scope_field))

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._editable(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._editable(request, obj)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]
        if db_field.name == self.entity_scope_field and field is not None:
            entities = entity_scope_of(request.user)
            if entities is not UNRESTRICTED:
                # A regional user can only pick their own entities, so cannot create enterprise-level records.
                field.queryset = field.queryset.filter(pk__in=entities)
                field.required = True
        return field

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        # The form already limits the choices; this is the last line should a form be built another way.
        if not entity_editable(request.user, entity_id_of(obj, self.entity_scope_field)):
            raise DjangoPermissionDenied("Your legal-entity scope does not let you save this record.")
        super().save_model(request, obj, form, change)  # type: ignore[misc]
