"""Selectors of the governance app: rate lookups, system-of-record answers and the overlap checks behind clean()."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet

from governance.choices import PeriodStatus
from governance.models import AccountingPeriod, LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from integrationhub.errors import HubConflictError, HubNotFoundError

if TYPE_CHECKING:
    from mappings.models import CanonicalEntity

SCOPE_CONTRACT = "contract"
SCOPE_CLIENT = "client"
SCOPE_ENTITY = "entity"


@dataclass(frozen=True)
class RateQuote:
    """The rate that applies to one role at one legal entity on one day, and the card it came from."""

    bill_rate: Decimal
    cost_rate: Decimal
    unit: str
    currency: str
    tolerance_percent: Decimal
    rate_card_id: int
    rate_card_name: str
    scope: str


# --- rate cards ------------------------------------------------------------------------------------


def rate_card_valid_on(*, on_date: datetime.date) -> Q:
    """A filter for cards whose validity includes `on_date` (both ends inclusive, no end = open-ended)."""
    return Q(valid_from__lte=on_date) & (Q(valid_to__isnull=True) | Q(valid_to__gte=on_date))


def rate_card_overlapping(*, rate_card: RateCard) -> QuerySet[RateCard]:
    """Other cards of the same scope (entity, currency, client, contract) whose validity overlaps this one's."""
    others = RateCard.objects.filter(
        legal_entity_id=rate_card.legal_entity_id,
        currency=rate_card.currency,
        client_ref=rate_card.client_ref,
        contract_ref=rate_card.contract_ref,
    ).filter(Q(valid_to__isnull=True) | Q(valid_to__gte=rate_card.valid_from))
    if rate_card.valid_to is not None:
        others = others.filter(valid_from__lte=rate_card.valid_to)
    if rate_card.pk:
        others = others.exclude(pk=rate_card.pk)
    return others.order_by("valid_from", "pk")


def rate_for(
    *,
    legal_entity: LegalEntity | str,
    role: str,
    on_date: datetime.date,
    client: str | None = None,
    contract: str | None = None,
    currency: str | None = None,
) -> RateQuote:
    """The rate for `role` on `on_date`: a contract card beats a client card beats the entity default card.

    A more specific card that does not list the role falls through to the next level, so an override card
    only needs the roles it changes. Without `currency`, the legal entity's base currency is preferred when
    cards in several currencies apply. Raises HubNotFoundError when no card lists the role on that day.
    """
    entity = _legal_entity(legal_entity)
    lines = RateCardLine.objects.select_related("rate_card").filter(
        rate_card__legal_entity=entity,
        role=role,
        rate_card__in=RateCard.objects.filter(rate_card_valid_on(on_date=on_date)),
    )
    if currency:
        lines = lines.filter(rate_card__currency=currency)

    levels: list[tuple[str, Q]] = []
    if contract:
        # A contract card names its client; when the caller knows the client too, both must agree.
        contract_q = Q(rate_card__contract_ref=contract)
        if client:
            contract_q &= Q(rate_card__client_ref=client)
        levels.append((SCOPE_CONTRACT, contract_q))
    if client:
        levels.append((SCOPE_CLIENT, Q(rate_card__client_ref=client, rate_card__contract_ref="")))
    levels.append((SCOPE_ENTITY, Q(rate_card__client_ref="", rate_card__contract_ref="")))

    for scope, condition in levels:
        found = list(lines.filter(condition))
        if not found:
            continue
        return _quote(_one_currency(found, entity=entity, role=role, on_date=on_date), scope)

    overrides = " or ".join(
        part for part in (f"contract {contract}" if contract else "", f"client {client}" if client else "") if part
    )
    raise HubNotFoundError(
        f"No rate card of legal entity {entity.code} lists role {role!r} on {on_date.isoformat()}"
        + (f" (looked for {overrides} overrides and the entity default)" if overrides else "")
        + ".",
        hint="Add the role to a rate card valid on that day, or correct the role or date on the record.",
    )


def rate_lookup_preload(
    *, legal_entity_codes: set[str], roles: set[str], first_date: datetime.date, last_date: datetime.date
) -> Callable[..., RateQuote]:
    """A `rate_for` that answers from rate card lines loaded in two queries, for a batch of records.

    It loads every line of the given legal entities and roles on cards valid at some point between the two
    dates, then answers each call like `rate_for` (contract, then client, then entity default card; one
    currency) without a query. A call outside the loaded entities, roles or dates asks `rate_for` itself.
    """
    entities = {entity.code: entity for entity in LegalEntity.objects.filter(code__in=legal_entity_codes)}
    overlapping = Q(valid_from__lte=last_date) & (Q(valid_to__isnull=True) | Q(valid_to__gte=first_date))
    lines: dict[tuple[int, str], list[RateCardLine]] = {}
    for line in RateCardLine.objects.select_related("rate_card").filter(
        rate_card__legal_entity__in=list(entities.values()),
        role__in=roles,
        rate_card__in=RateCard.objects.filter(overlapping),
    ):
        lines.setdefault((line.rate_card.legal_entity_id, line.role), []).append(line)

    def lookup(
        *,
        legal_entity: LegalEntity | str,
        role: str,
        on_date: datetime.date,
        client: str | None = None,
        contract: str | None = None,
        currency: str | None = None,
    ) -> RateQuote:
        code = legal_entity.code if isinstance(legal_entity, LegalEntity) else legal_entity
        entity = entities.get(code)
        if entity is None or role not in roles or not first_date <= on_date <= last_date:
            return rate_for(
                legal_entity=legal_entity,
                role=role,
                on_date=on_date,
                client=client,
                contract=contract,
                currency=currency,
            )
        valid = [
            line
            for line in lines.get((entity.pk, role), [])
            if line.rate_card.valid_from <= on_date
            and (line.rate_card.valid_to is None or line.rate_card.valid_to >= on_date)
            and (not currency or line.rate_card.currency == currency)
        ]
        levels: list[tuple[str, Callable[[RateCard], bool]]] = []
        if contract:
            levels.append(
                (
                    SCOPE_CONTRACT,
                    lambda card: card.contract_ref == contract and (not client or card.client_ref == client),
                )
            )
        if client:
            levels.append((SCOPE_CLIENT, lambda card: card.client_ref == client and card.contract_ref == ""))
        levels.append((SCOPE_ENTITY, lambda card: card.client_ref == "" and card.contract_ref == ""))
        for scope, matches in levels:
            found = [line for line in valid if matches(line.rate_card)]
            if found:
                return _quote(_one_currency(found, entity=entity, role=role, on_date=on_date), scope)
        # Nothing loaded applies: rate_for raises the same not-found error a single lookup would.
        return rate_for(
            legal_entity=entity, role=role, on_date=on_date, client=client, contract=contract, currency=currency
        )

    return lookup


def _quote(line: RateCardLine, scope: str) -> RateQuote:
    card = line.rate_card
    return RateQuote(
        bill_rate=line.bill_rate,
        cost_rate=line.cost_rate,
        unit=line.unit,
        currency=card.currency,
        tolerance_percent=card.tolerance_percent,
        rate_card_id=card.pk,
        rate_card_name=card.name,
        scope=scope,
    )


def _legal_entity(legal_entity: LegalEntity | str) -> LegalEntity:
    if isinstance(legal_entity, LegalEntity):
        return legal_entity
    try:
        return LegalEntity.objects.get(code=legal_entity)
    except LegalEntity.DoesNotExist:
        raise HubNotFoundError(
            f"No legal entity has the code {legal_entity!r}.", hint="Use the code of a registered legal entity."
        ) from None


def _one_currency(found: list[RateCardLine], *, entity: LegalEntity, role: str, on_date: datetime.date) -> RateCardLine:
    # The overlap rule allows one card per scope and currency, so several hits differ only in currency.
    if len(found) == 1:
        return found[0]
    base = [line for line in found if line.rate_card.currency == entity.base_currency]
    if len(base) == 1:
        return base[0]
    cards = ", ".join(f"{line.rate_card.name} ({line.rate_card.currency})" for line in found)
    raise HubConflictError(
        f"Several rate cards of {entity.code} list role {role!r} on {on_date.isoformat()}: {cards}.",
        hint="Ask for the rate in one currency, or end one of the cards.",
    )


# --- ownership rules ----------------------------------------------------------------------------------


def field_paths_overlap(first: str, second: str) -> bool:
    """Whether one dotted field path is the other or contains it ("billing" and "billing.method")."""
    return first == second or first.startswith(second + ".") or second.startswith(first + ".")


def _path_matches(owned: str, field: str) -> bool:
    return field == owned or field.startswith(owned + ".")


def owner_of(*, entity: CanonicalEntity | str, field: str, stage: str = "") -> OwnershipRule | None:
    """The ownership rule answering "which system owns `field` of `entity` at `stage`?", or None.

    Precedence: a rule for the stage beats a rule for every stage; within that, a rule listing the field
    (or a dotted prefix of it) beats an "all fields" rule, and the longest listed path wins.
    `entity` is a CanonicalEntity or its name.
    """
    rules = OwnershipRule.objects.select_related("entity", "owning_system")
    rules = rules.filter(entity__name=entity) if isinstance(entity, str) else rules.filter(entity=entity)
    stages = [stage, ""] if stage else [""]
    candidates = list(rules.filter(lifecycle_stage__in=stages).order_by("id"))

    def rank(rule: OwnershipRule) -> tuple[int, int, int]:
        stage_rank = 0 if stage and rule.lifecycle_stage == stage else 1
        if not rule.field_group:
            return (stage_rank, 1, 0)
        longest = max(len(path) for path in rule.field_group if _path_matches(path, field))
        return (stage_rank, 0, -longest)

    matching = [
        rule for rule in candidates if not rule.field_group or any(_path_matches(p, field) for p in rule.field_group)
    ]
    if not matching:
        return None
    return min(matching, key=rank)  # min() is stable, so equal ranks keep the lowest id


@dataclass(frozen=True)
class OwnershipConflict:
    """Another rule that claims some of the same fields of the same entity at the same stage."""

    rule: OwnershipRule
    fields: list[str]


def ownership_rule_conflicts(*, rule: OwnershipRule) -> list[OwnershipConflict]:
    """Rules of the same entity and stage whose fields overlap `rule`'s (two "all fields" rules also conflict)."""
    if not rule.entity_id:
        return []
    others = OwnershipRule.objects.select_related("entity", "owning_system").filter(
        entity_id=rule.entity_id, lifecycle_stage=rule.lifecycle_stage
    )
    if rule.pk:
        others = others.exclude(pk=rule.pk)
    conflicts = []
    mine = list(rule.field_group or [])
    for other in others.order_by("id"):
        theirs = list(other.field_group or [])
        if not mine and not theirs:
            conflicts.append(OwnershipConflict(other, ["all fields"]))
            continue
        overlap = [a if a == b else f"{a} / {b}" for a in mine for b in theirs if field_paths_overlap(a, b)]
        if overlap:
            conflicts.append(OwnershipConflict(other, overlap))
    return conflicts


# --- sync policies ------------------------------------------------------------------------------------


def sync_policy_get(*, policy_id: int) -> SyncPolicy | None:
    """The policy with this id (with its legal entity), or None when it was deleted."""
    return SyncPolicy.objects.select_related("legal_entity", "periodic_task").filter(pk=policy_id).first()


def sync_policy_for(*, flow: str, legal_entity: LegalEntity | None = None) -> SyncPolicy | None:
    """The active policy of a flow for a legal entity, falling back to the flow's enterprise-wide policy."""
    policies = SyncPolicy.objects.filter(flow=flow, active=True)
    if legal_entity is not None:
        specific = policies.filter(legal_entity=legal_entity).order_by("id").first()
        if specific:
            return specific
    return policies.filter(legal_entity__isnull=True).order_by("id").first()


# --- accounting periods -------------------------------------------------------------------------------


def accounting_period_for(*, legal_entity: LegalEntity | str, on_date: datetime.date) -> AccountingPeriod | None:
    """The period of the legal entity's calendar that contains `on_date`, or None when the calendar has none."""
    periods = AccountingPeriod.objects.filter(start_date__lte=on_date, end_date__gte=on_date)
    if isinstance(legal_entity, LegalEntity):
        periods = periods.filter(legal_entity=legal_entity)
    else:
        periods = periods.filter(legal_entity__code=legal_entity)
    return periods.order_by("start_date").first()


def accounting_period_is_open(*, legal_entity: LegalEntity | str, on_date: datetime.date) -> bool:
    """Whether the legal entity may post on `on_date`: a period of its calendar contains the day and is open.

    The calendar is the one answer for every path (webhook, pull, batch, replay): a day outside every period of
    the calendar is not open, since finance (or the period pull from the ERP) opens a period before anything posts
    to it.
    """
    period = accounting_period_for(legal_entity=legal_entity, on_date=on_date)
    return period is not None and period.status == PeriodStatus.OPEN


def period_calendar_preload(
    *, legal_entity_codes: Iterable[str], first_date: datetime.date, last_date: datetime.date
) -> Callable[[str, datetime.date], bool]:
    """`accounting_period_is_open` for many entries at once: the periods of these entities that touch
    [first_date, last_date] read in one query, answered in memory (a day outside them is not open)."""
    by_entity: dict[str, list[tuple[datetime.date, datetime.date, str]]] = {}
    rows = AccountingPeriod.objects.filter(
        legal_entity__code__in=set(legal_entity_codes), start_date__lte=last_date, end_date__gte=first_date
    ).values_list("legal_entity__code", "start_date", "end_date", "status")
    for code, start, end, status in rows:
        by_entity.setdefault(code, []).append((start, end, status))

    def is_open(legal_entity_code: str, on_date: datetime.date) -> bool:
        if not first_date <= on_date <= last_date:
            return accounting_period_is_open(legal_entity=legal_entity_code, on_date=on_date)
        return any(
            start <= on_date <= end and status == PeriodStatus.OPEN
            for start, end, status in by_entity.get(legal_entity_code, [])
        )

    return is_open


def accounting_period_next_open(*, legal_entity: LegalEntity | str, after: datetime.date) -> AccountingPeriod | None:
    """The first open period of the legal entity's calendar that starts after `after`, or None when none is open
    yet (finance opens one, or the period pull brings it from the ERP)."""
    periods = AccountingPeriod.objects.filter(start_date__gt=after, status=PeriodStatus.OPEN)
    if isinstance(legal_entity, LegalEntity):
        periods = periods.filter(legal_entity=legal_entity)
    else:
        periods = periods.filter(legal_entity__code=legal_entity)
    return periods.order_by("start_date").first()
