"""Legal-entity scoping: a user sees and acts on only the records of the legal entities they are granted.

What a scope grants (EntityScope):
- a superuser, or a user whose UserLegalEntityScope has `all_entities`, has every entity, including records whose
  entity cannot be known; only an integration admin may set the flag, and each grant or removal is audited;
- otherwise the scope row's entities, and nothing when the user has no row or a row with no entities (fail closed);
- an API key never reaches beyond its owner: its legal entity narrows the owner's scope to that entity, its
  `all_entities` flag keeps the owner's scope, and a key with neither has no entity at all.

Two kinds of records:
- Configuration (RateCard, ValueMap, MappingSet, FieldRule…): `records_visible_to`, `entity_editable` and the
  EntityScoped mixins. A configuration record with no legal entity is enterprise-level: visible to every user,
  editable only by users with all entities.
- Operational data (messages, deliveries, attempts, exception items and decisions, workflow runs and steps, the time
  and expense ledger, batch progress, audit events): `records_in_scope`, `record_in_scope_or_404` and the
  OperationalScope mixins. A record whose entity is unknown is visible only to users with all entities. Each model's
  path to its legal entity is in OPERATIONAL_SCOPE_PATHS; another app declares its own rows with
  `operational_scope_register` (see its docstring), and every selector, API view, admin class and page then scopes
  them the same way. Out-of-scope records answer 404, never 403: their existence is not disclosed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Model, Q, QuerySet
from django.http import Http404
from rest_framework import exceptions

from integrationhub.models import ApiKey, UserLegalEntityScope

UNRESTRICTED = None
SCOPE_FIELD = "legal_entity"
# Who may grant "all entities" (to a user or a key): the integration admins, who alone may change scopes.
PERM_GRANT_ALL_ENTITIES = "integrationhub.change_userlegalentityscope"


@dataclass(frozen=True)
class EntityScope:
    """What a user (or a key) may see: every entity, or exactly `entity_ids` (possibly none)."""

    all_entities: bool
    entity_ids: frozenset[int] = frozenset()

    def covers(self, legal_entity_id: int | None) -> bool:
        """Whether a record of this legal entity (None: unknown) is in scope."""
        return self.all_entities or (legal_entity_id is not None and legal_entity_id in self.entity_ids)

    def covers_all(self, legal_entity_ids: Iterable[int | None]) -> bool:
        """Whether every one of these entities is in scope (and there is at least one)."""
        ids = list(legal_entity_ids)
        return self.all_entities or (bool(ids) and all(self.covers(pk) for pk in ids))

    def narrowed_to(self, legal_entity_id: int) -> EntityScope:
        granted = self.all_entities or legal_entity_id in self.entity_ids
        return EntityScope(all_entities=False, entity_ids=frozenset({legal_entity_id}) if granted else frozenset())


EVERY_ENTITY = EntityScope(all_entities=True)
NO_ENTITY = EntityScope(all_entities=False)


def user_entity_scope(user: Any) -> EntityScope:
    """The entities a user is granted: superusers and `all_entities` scopes have every one; no row grants none."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
        return NO_ENTITY
    if user.is_superuser:
        return EVERY_ENTITY
    row = UserLegalEntityScope.objects.filter(user=user).first()
    if row is None:
        return NO_ENTITY
    if row.all_entities:
        return EVERY_ENTITY
    return EntityScope(all_entities=False, entity_ids=frozenset(row.legal_entities.values_list("pk", flat=True)))


def entity_scope_for(user: Any, api_key: ApiKey | None = None) -> EntityScope:
    """The scope of `user`, acting through `api_key` if given (never more than the owner's)."""
    scope = user_entity_scope(user)
    if api_key is None:
        return scope
    if api_key.legal_entity_id is not None:
        return scope.narrowed_to(api_key.legal_entity_id)
    return scope if api_key.all_entities else NO_ENTITY


def request_entity_scope(request: Any) -> EntityScope:
    """The scope of the person or key making `request` (a session, or an API key's owner within the key); looked
    up once per request and caller (a page asks for it from its list, its counts and its actions)."""
    user, api_key = getattr(request, "user", None), _api_key(request)
    caller = (getattr(user, "pk", None), getattr(api_key, "pk", None))
    cached = getattr(request, "_hub_entity_scope", None)
    if cached is not None and cached[0] == caller:
        return cached[1]
    scope = entity_scope_for(user, api_key)
    request._hub_entity_scope = (caller, scope)
    return scope


def entity_scope_of(user: Any, api_key: ApiKey | None = None) -> frozenset[int] | None:
    """The legal-entity ids `user` (through `api_key`, if any) is limited to; None when unrestricted."""
    scope = entity_scope_for(user, api_key)
    return UNRESTRICTED if scope.all_entities else scope.entity_ids


def can_grant_all_entities(user: Any) -> bool:
    """Only integration admins (and superusers) may grant a user or a key every legal entity."""
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and (user.is_superuser or user.has_perm(PERM_GRANT_ALL_ENTITIES))
    )


# --- operational data ------------------------------------------------------------------------------------

ScopeCondition = Callable[[frozenset[int]], Q]


def _path(path: str) -> ScopeCondition:
    return lambda ids: Q(**{f"{path}__in": ids})


def _systems_within(ids: frozenset[int]) -> list[int]:
    """Systems that serve at least one legal entity and only entities in `ids`: their rows (a batch's progress,
    a file drop, a cross-reference) carry no other entity's data."""
    system_model = apps.get_model("connectors", "ConnectedSystem")
    served: dict[int, set[int]] = {}
    for system_id, entity_id in system_model.legal_entities.through.objects.values_list(
        "connectedsystem_id", "legalentity_id"
    ):
        served.setdefault(system_id, set()).add(entity_id)
    return [system_id for system_id, entities in served.items() if entities <= ids]


def systems_in_scope(queryset: QuerySet, scope: EntityScope) -> QuerySet:
    """The connected systems of `queryset` a caller may send work into: every one with all entities, else those
    serving only the caller's entities (a shared or entity-less system would mix in other entities' work)."""
    if scope.all_entities:
        return queryset
    return queryset.filter(pk__in=_systems_within(scope.entity_ids) if scope.entity_ids else [])


def _by_system(path: str) -> ScopeCondition:
    return lambda ids: Q(**{f"{path}__in": _systems_within(ids)})


def _attempt_condition(ids: frozenset[int]) -> Q:
    # A delivery's call belongs to its message's entity; a workflow step's call (no delivery) to the entity of
    # the messages and runs that share its correlation id.
    message_model = apps.get_model("sync", "Message")
    run_model = apps.get_model("workflows", "WorkflowRun")
    correlated = message_model.objects.filter(legal_entity__in=ids).values("correlation_id")
    run_correlated = run_model.objects.filter(legal_entity__in=ids).exclude(correlation_id="").values("correlation_id")
    return Q(delivery__message__legal_entity__in=ids) | Q(
        Q(delivery__isnull=True) & (Q(correlation_id__in=correlated) | Q(correlation_id__in=run_correlated))
    )


def _decision_condition(ids: frozenset[int]) -> Q:
    # A decision on an item follows the item; a decision on a message alone (a replay) follows the message.
    return Q(item__legal_entity__in=ids) | Q(item__isnull=True, message__legal_entity__in=ids)


# app_label.model_name → how its rows reach a legal entity. Every operational model is listed; a model missing
# here is refused by records_in_scope for a scoped user (fail closed) rather than shown unfiltered.
OPERATIONAL_SCOPE_PATHS: dict[str, ScopeCondition] = {
    "sync.message": _path("legal_entity"),
    "sync.delivery": _path("message__legal_entity"),
    "sync.deliveryattempt": _attempt_condition,
    "sync.followupevent": _path("message__legal_entity"),
    "sync.crossreference": _by_system("system"),
    "sync.filedrop": _by_system("system"),
    "sync.pollcursor": _by_system("system"),
    "exception_queue.exceptionitem": _path("legal_entity"),
    "exception_queue.decision": _decision_condition,
    "workflows.workflowrun": _path("legal_entity"),
    "workflows.milestonebillingrun": _path("legal_entity"),
    "workflows.workflowstep": _path("run__legal_entity"),
    "workflows.timeexpenseposting": _path("message__legal_entity"),
    "workflows.financenotification": _path("legal_entity"),
    "workflows.clientdirectoryentry": _path("legal_entity"),
    "insights.batchprogress": _by_system("system"),
    "insights.kpidashboard": _by_system("system"),
    "integrationhub.auditevent": _path("legal_entity_id"),
    # Reconciliation's runs and rows are each of one legal entity (an app may also declare its own, see below).
    "reconciliation.reconciliationrun": _path("legal_entity"),
    "reconciliation.reconciliationrow": _path("legal_entity"),
}


def operational_scope_register(model_label: str, path: str | ScopeCondition = SCOPE_FIELD) -> None:
    """Declare how the rows of `model_label` ("app_label.modelname", lower case) reach their legal entity.

    `path` is a lookup to the legal entity ("legal_entity", "line__legal_entity") or a function turning a set of
    legal-entity ids into a Q. Call it once at import time (e.g. from the app's selectors module or its
    AppConfig.ready), then read every list and detail through `records_in_scope(queryset, request=request)` or
    `record_in_scope_or_404(...)`, and the rows are scoped exactly like messages and exception items: a scoped
    user sees their entities' rows, never a row whose entity is unknown, and another entity's row answers 404.
    """
    OPERATIONAL_SCOPE_PATHS[model_label.lower()] = _path(path) if isinstance(path, str) else path


def operational_scope_condition(model: type[Model], scope: EntityScope) -> Q | None:
    """The Q that keeps the rows of `model` in `scope`; None when no filter is needed (every entity)."""
    if scope.all_entities:
        return None
    label = model._meta.label_lower
    condition = OPERATIONAL_SCOPE_PATHS.get(label)
    if condition is None:
        raise LookupError(f"{label} has no legal-entity path; declare it with operational_scope_register.")
    if not scope.entity_ids:
        return Q(pk__in=[])
    return condition(scope.entity_ids)


def records_in_scope(
    queryset: QuerySet,
    *,
    request: Any = None,
    user: Any = None,
    api_key: ApiKey | None = None,
    scope: EntityScope | None = None,
) -> QuerySet:
    """The operational rows of `queryset` within the scope of `request` (or `user`/`api_key`, or `scope`).

    Rows whose legal entity is unknown are kept only for a scope with every entity. Apply it before the
    user's filters: a filter then only narrows, it can never reach another entity's rows.
    """
    if scope is None:
        scope = request_entity_scope(request) if request is not None else entity_scope_for(user, api_key)
    condition = operational_scope_condition(queryset.model, scope)
    # Every condition follows foreign keys or sub-queries, so it never duplicates a row: no distinct() needed.
    return queryset if condition is None else queryset.filter(condition)


def require_in_scope(
    *, user: Any, legal_entity_id: int | None, what: str = "record", scope: EntityScope | None = None
) -> None:
    """The services' own check before an action (decide, replay, bulk): a record outside the scope of `user` (or
    of `scope`, a key's) is answered as missing, HubNotFoundError (404), whoever called the service."""
    from integrationhub.errors import HubNotFoundError

    if not (scope or entity_scope_for(user)).covers(legal_entity_id):
        raise HubNotFoundError(f"No such {what}.", hint="It may belong to a legal entity outside your scope.")


def record_in_scope_or_404(
    queryset: QuerySet, *, request: Any = None, scope: EntityScope | None = None, **lookup: Any
) -> Any:
    """One row of `queryset` by `lookup` if it is in scope, else Http404 (the same answer as a missing row)."""
    row = records_in_scope(queryset, request=request, scope=scope).filter(**lookup).first()
    if row is None:
        raise Http404("No such record.")
    return row


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
    """The configuration records of `queryset` the user may see: their entities' and enterprise-level ones."""
    entities = entity_scope_of(user, api_key)
    if entities is UNRESTRICTED:
        return queryset
    condition = Q(**{f"{field}__in": entities})
    if _field_is_nullable(queryset.model, field):
        condition |= Q(**{f"{field}__isnull": True})
    return queryset.filter(condition)


def entity_editable(user: Any, legal_entity_id: int | None, *, api_key: ApiKey | None = None) -> bool:
    """Whether the user may create, change or delete a configuration record of this legal entity (None:
    enterprise-level, which only users with every entity may edit)."""
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


class OperationalScopeViewSetMixin:
    """Put first in an operational viewset's bases: lists, details and actions see only the rows in the caller's
    scope, so another entity's row answers 404 to a detail and to every action that loads it (get_object).

    It scopes in filter_queryset, which DRF's list and get_object both go through, so a viewset that overrides
    get_queryset (a different select_related per action, say) is scoped all the same."""

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)  # type: ignore[misc]
        return records_in_scope(queryset, request=self.request)  # type: ignore[attr-defined]


class OperationalScopeAdminMixin:
    """Put first in an operational ModelAdmin's bases: the list, the change page, the history and every action
    (they all start from get_queryset) see only the rows in scope; another entity's row answers 404."""

    def get_queryset(self, request: Any) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return records_in_scope(queryset, request=request)

    def _get_obj_does_not_exist_redirect(self, request: Any, opts: Any, object_id: str) -> Any:
        # Django redirects to the admin index with "doesn't exist"; a row out of scope must look the same as a
        # missing one, and a plain 404 says so without a redirect (the same answer as the API's).
        raise Http404(f"No {opts.verbose_name} with id {object_id!r}.")
