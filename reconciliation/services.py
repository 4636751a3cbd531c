"""Reconciliation: prove that nothing leaked between what the PSA approved and what the ERP holds.

For one legal entity and accounting period (a month), every approved time entry and expense is read from the PSA
and every line from the ERP itself (the sandbox ERP's time entries, Tryton's timesheet lines), page by page
through the transport. Each entry is then explained by what the hub knows about it (its messages, the posting
ledger and the exception queue), and the figures are kept per (kind, project, person):

    unexplained = approved - posted - queued - withdrawn

- approved: the entry's hours and amount in the PSA when it is approved now (0 when it is not, or gone);
- posted: the net of the ERP's lines for the entry as the ERP holds them (posts, adjustments and reversals;
  a line deleted or edited in the ERP counts as the ERP says);
- queued: what the hub holds and has not posted yet: ledger lines of kind post waiting or refused by the ERP,
  and the rest of an entry whose latest message waits in the queue (an open exception item) or in the pipeline;
- withdrawn: corrections on their way (reversal and adjustment lines not yet accepted, negative when they take
  hours back), and an entry finance rejected (it is not to be posted).

A non-zero unexplained difference opens one RECONCILIATION_DIFFERENCE item per (legal entity, period, kind,
project, person), found again by its key on the next run (updated, never doubled) and resolved by the first
run in which the difference is gone. A run that cannot read the PSA or the ERP fails, names the system and
why, and leaves the last good run as the result shown; the beat schedule runs it again.
"""

from __future__ import annotations

import calendar
import datetime
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from exception_queue.services import decision_record, exception_item_open
from governance.choices import Flow
from governance.models import LegalEntity
from integrationhub.audit import AuditAction, audit_record
from integrationhub.dispatch import enqueue_on_commit
from integrationhub.errors import HubConflictError, HubError, HubValidationError
from integrationhub.logging import new_correlation_id
from integrationhub.scoping import entity_scope_of
from mappings.choices import Direction
from mappings.runtime import compiled_mapping, published_mapping_set, xrefs_resolve
from reconciliation import readers
from reconciliation.choices import ACTIVE_RUN_STATUSES, RowKind, RunStatus, RunTrigger
from reconciliation.models import ReconciliationRow, ReconciliationRun
from sync.choices import MessageStatus
from sync.models import CrossReference, Message, Route
from workflows.choices import PostingKind, PostingStatus
from workflows.models import TimeExpensePosting

logger = logging.getLogger(__name__)

PERM_RUN = "reconciliation.add_reconciliationrun"
PERM_VIEW = "reconciliation.view_reconciliationrun"
FLOW = Flow.TIME_EXPENSE_TO_ERP
ENTITIES = (RowKind.TIME_ENTRY.value, RowKind.EXPENSE.value)
CENT = Decimal("0.01")
ZERO = Decimal("0")
# Messages the pipeline is still carrying: what they hold is on its way, not missing.
IN_FLIGHT = frozenset(
    {
        MessageStatus.RECEIVED,
        MessageStatus.MAPPED,
        MessageStatus.VALIDATED,
        MessageStatus.HELD,
        MessageStatus.QUEUED,
        MessageStatus.DELIVERING,
    }
)
KEY_CHUNK = 2000  # ids per IN (…) query: well inside SQLite's and PostgreSQL's parameter limits


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else ZERO
    except InvalidOperation:
        return ZERO


def _chunks(values: list[Any], size: int = KEY_CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- periods ---------------------------------------------------------------------------------------------


def period_bounds(period: str) -> tuple[datetime.date, datetime.date]:
    """The first and last day of a period "YYYY-MM"; HubValidationError naming `period` otherwise."""
    try:
        year, month = (int(part) for part in period.split("-"))
        first = datetime.date(year, month, 1)
    except (ValueError, TypeError) as exc:
        raise HubValidationError(
            f"period {period!r} is not a month: write it as YYYY-MM, e.g. 2026-12.",
            errors=[{"field": "period", "message": "A month YYYY-MM is required."}],
        ) from exc
    return first, first.replace(day=calendar.monthrange(year, month)[1])


def period_of(day: datetime.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def periods_due(*, today: datetime.date) -> list[str]:
    """The periods the schedule reconciles: this month and the one before (its close is still going on)."""
    previous = today.replace(day=1) - datetime.timedelta(days=1)
    return [period_of(today), period_of(previous)]


# --- which systems -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A PSA and the ERP its approved entries of one kind post to, for a legal entity (from the flow's routes)."""

    psa: ConnectedSystem
    erp: ConnectedSystem
    kind: str


def reconciliation_pairs(*, legal_entity: LegalEntity) -> list[Pair]:
    """The (PSA, ERP, kind) of the time and expense flow's active routes that serve `legal_entity`: a route
    limited to the entity, or an unlimited one whose ERP serves it."""
    pairs: dict[tuple[int, str], Pair] = {}
    routes = (
        Route.objects.filter(flow=FLOW, active=True, entity__in=ENTITIES)
        .select_related("source_system", "target_system")
        .prefetch_related("target_system__legal_entities")
        .order_by("legal_entity_id", "pk")
    )
    for route in routes:
        serves = route.legal_entity_id == legal_entity.pk or (
            route.legal_entity_id is None
            and legal_entity.pk in {entity.pk for entity in route.target_system.legal_entities.all()}
        )
        if serves:
            pairs.setdefault(
                (route.source_system_id, route.entity), Pair(route.source_system, route.target_system, route.entity)
            )
    return list(pairs.values())


def reconcilable_entities() -> list[LegalEntity]:
    """Legal entities with at least one route of the time and expense flow to reconcile."""
    return [entity for entity in LegalEntity.objects.order_by("code") if reconciliation_pairs(legal_entity=entity)]


# --- per entry -------------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One PSA entry (or one ERP line the hub cannot tie to an entry) and how its figures are explained."""

    key: str
    kind: str
    psa_id: str = ""
    erp: str = ""
    project: str = ""
    project_name: str = ""
    person: str = ""
    person_name: str = ""
    date: str = ""
    currency: str = ""
    legal_entity_id: int | None = None
    approved_hours: Decimal = ZERO
    approved_amount: Decimal = ZERO
    posted_hours: Decimal = ZERO
    posted_amount: Decimal = ZERO
    reversed_amount: Decimal = ZERO
    queued_hours: Decimal = ZERO
    queued_amount: Decimal = ZERO
    withdrawn_hours: Decimal = ZERO
    withdrawn_amount: Decimal = ZERO
    erp_lines: list[str] = field(default_factory=list)
    queue: list[dict[str, Any]] = field(default_factory=list)
    message_id: int | None = None
    correlation_id: str = ""

    @property
    def unexplained_hours(self) -> Decimal:
        return self.approved_hours - self.posted_hours - self.queued_hours - self.withdrawn_hours

    @property
    def unexplained_amount(self) -> Decimal:
        return self.approved_amount - self.posted_amount - self.queued_amount - self.withdrawn_amount

    def as_dict(self) -> dict[str, Any]:
        money = {
            name: str(getattr(self, name).quantize(CENT))
            for name in (
                "approved_hours",
                "approved_amount",
                "posted_hours",
                "posted_amount",
                "queued_hours",
                "queued_amount",
                "withdrawn_hours",
                "withdrawn_amount",
                "unexplained_hours",
                "unexplained_amount",
            )
        }
        return {
            "key": self.key,
            "kind": self.kind,
            "psa_id": self.psa_id,
            "erp": self.erp,
            "date": self.date,
            "currency": self.currency,
            "erp_lines": self.erp_lines,
            "queue": self.queue,
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            **money,
        }


def entry_key(psa_slug: str, kind: str, psa_id: str) -> str:
    """The key the time and expense flow gives an entry across its versions (the ERP line's source_ref)."""
    return f"{psa_slug}:{kind}:{psa_id}"[:200]


@dataclass
class Collected:
    """Everything one run read and worked out, before it is stored."""

    entries: dict[str, Entry] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    records: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unmapped: list[dict[str, Any]] = field(default_factory=list)


class SystemReadError(HubError):
    """A counterpart could not be read: the run fails and names it."""

    status = 503
    code = "reconciliation_read_failed"
    title = "A system could not be read"

    def __init__(self, system: ConnectedSystem, detail: str) -> None:
        super().__init__(detail)
        self.system = system


def _read(
    system: ConnectedSystem,
    entity: str,
    *,
    filters: dict[str, Any],
    page_size: int,
    correlation_id: str,
    collected: Collected,
) -> Iterable[dict[str, Any]]:
    """Every record of a paged read; a failure of any page becomes SystemReadError naming the system."""
    try:
        for page in readers.records_pages(
            system, entity, filters=filters, page_size=page_size, correlation_id=correlation_id
        ):
            collected.pages[system.slug] += 1
            collected.records[system.slug] += len(page)
            yield from page
    except (ConnectorError, HubError) as exc:
        detail = getattr(exc, "detail", str(exc))
        raise SystemReadError(system, f"{system.slug} ({system.role}) could not be read: {detail}") from exc


def _psa_entries(
    pair: Pair,
    *,
    legal_entity: LegalEntity,
    start: datetime.date,
    end: datetime.date,
    correlation_id: str,
    collected: Collected,
) -> None:
    """The PSA's approved entries of one kind in the period, mapped with the PSA's published inbound mapping (the
    same one the flow uses), kept when their legal entity is this run's."""
    mapping_set = published_mapping_set(system_id=pair.psa.pk, entity_name=pair.kind, direction=Direction.INBOUND)
    if mapping_set is None:
        raise SystemReadError(
            pair.psa,
            f"{pair.psa.slug} has no published inbound mapping for {pair.kind}: publish it (the time and expense "
            "flow needs it too), then run the reconciliation again.",
        )
    compiled = compiled_mapping(mapping_set.pk)
    own_entities = list(pair.psa.legal_entities.values_list("pk", flat=True))
    fallback_entity = own_entities[0] if len(own_entities) == 1 else None
    codes = dict(LegalEntity.objects.values_list("code", "pk"))
    filters = {"date_from": start.isoformat(), "date_to": end.isoformat(), "approval_status": "approved"}
    records = list(
        _read(
            pair.psa,
            pair.kind,
            filters=filters,
            page_size=readers.PSA_PAGE_SIZE,
            correlation_id=correlation_id,
            collected=collected,
        )
    )
    results = compiled.map_batch(records, resolve_xrefs=xrefs_resolve)
    # Projects are keyed by their canonical id (the one the ERP's cross-reference also leads to), else the PSA's.
    psa_projects = {str((result.output or {}).get("project_id") or "") for result in results}
    canonical_projects = dict(
        CrossReference.objects.filter(system=pair.psa, entity="project", external_id__in=psa_projects).values_list(
            "external_id", "canonical_id"
        )
    )
    for record, result in zip(records, results, strict=True):
        canonical = result.output or {}
        if result.errors:
            collected.unmapped.append(
                {
                    "system": pair.psa.slug,
                    "kind": pair.kind,
                    "id": str(record.get("id")),
                    "error": str(result.errors[0]),
                }
            )
            continue
        if canonical.get("approval_status") != "approved":
            continue
        day = str(canonical.get("date") or "")[:10]
        if not (start.isoformat() <= day <= end.isoformat()):
            continue
        code = canonical.get("legal_entity_code") or canonical.get("contracting_legal_entity_code")
        entity_id = codes.get(code) if code else fallback_entity
        if entity_id != legal_entity.pk:
            continue
        psa_id = str(canonical.get("id") or record.get("id"))
        if pair.kind == RowKind.EXPENSE:
            hours, amount = ZERO, _decimal(canonical.get("amount")).quantize(CENT)
        else:
            hours = _decimal(canonical.get("hours")).quantize(CENT)
            amount = (hours * _decimal(canonical.get("rate"))).quantize(CENT)
        project = record.get("project") or {}
        user = record.get("user") or {}
        key = entry_key(pair.psa.slug, pair.kind, psa_id)
        collected.entries[key] = Entry(
            key=key,
            kind=pair.kind,
            psa_id=psa_id,
            erp=pair.erp.slug,
            project=canonical_projects.get(
                str(canonical.get("project_id") or ""), str(canonical.get("project_id") or "")
            ),
            project_name=str(project.get("name") or "") if isinstance(project, dict) else "",
            person=str(canonical.get("resource_id") or ""),
            person_name=str(user.get("name") or "") if isinstance(user, dict) else "",
            date=day,
            currency=str(canonical.get("currency") or ""),
            legal_entity_id=legal_entity.pk,
            approved_hours=hours,
            approved_amount=amount,
        )


def _line_key_of(description: Any) -> str:
    """The idempotency key in a Tryton line's description tag (`<note> [hub:<key>]`, `hub:<key>`, or the older
    `hub:<key> <note>`), else "": the connector's own reading of its tag."""
    from connectors.tryton import line_key_of

    return line_key_of(description)


def _erp_lines(
    erp: ConnectedSystem,
    pairs: list[Pair],
    *,
    legal_entity: LegalEntity,
    start: datetime.date,
    end: datetime.date,
    correlation_id: str,
    collected: Collected,
) -> None:
    """The ERP's live lines of the period, each added to its entry's posted figures: by the source_ref the flow
    writes on a sandbox ERP line, or by the idempotency key tagged on a Tryton line (through the ledger). A line
    the hub cannot tie to an entry is an entry of its own (posted outside the hub), when the ERP serves only this
    legal entity."""
    psa_slugs = {pair.psa.slug for pair in pairs}
    erp_entities = set(erp.legal_entities.values_list("pk", flat=True))
    exclusive = erp_entities == {legal_entity.pk}
    filters = {"date_from": start.isoformat(), "date_to": end.isoformat()}
    lines = [
        line
        for line in _read(
            erp,
            "time_entry",
            filters=filters,
            page_size=readers.ERP_PAGE_SIZE,
            correlation_id=correlation_id,
            collected=collected,
        )
        if start.isoformat() <= str(line.get("date") or "")[:10] <= end.isoformat()
    ]
    # Tryton's lines carry the line's idempotency key; the ledger says which entry (and at what rate) it was.
    line_keys = [key for key in (_line_key_of(line.get("description")) for line in lines) if key]
    ledger_by_line_key: dict[str, tuple[str, str, Decimal, Decimal]] = {}
    for chunk in _chunks(line_keys):
        for line_key, ledger_entry, ledger_kind, ledger_hours, ledger_amount in TimeExpensePosting.objects.filter(
            target_system=erp, idempotency_key__in=chunk
        ).values_list("idempotency_key", "entry_key", "entity", "hours", "amount"):
            ledger_by_line_key[line_key] = (ledger_entry, ledger_kind, ledger_hours, ledger_amount)
    project_refs = {str(line.get("project_id")) for line in lines if line.get("project_id")}
    canonical_projects = dict(
        CrossReference.objects.filter(system=erp, entity="project", external_id__in=project_refs).values_list(
            "external_id", "canonical_id"
        )
    )
    for line in lines:
        line_id = str(line.get("id"))
        hours = _decimal(line.get("hours")).quantize(CENT)
        amount: Decimal | None = _decimal(line.get("amount")).quantize(CENT) if line.get("amount") is not None else None
        key = str(line.get("source_ref") or "")
        kind = str(line.get("kind") or RowKind.TIME_ENTRY)
        ledger = ledger_by_line_key.get(_line_key_of(line.get("description")))
        if ledger is not None:
            key, kind = ledger[0], ledger[1]
            if amount is None:
                # Tryton keeps durations, not amounts: the line is worth its hours at the rate it was posted with.
                rate = (ledger[3] / ledger[2]) if ledger[2] else ZERO
                amount = (hours * rate).quantize(CENT)
        if amount is None:
            amount = ZERO
        if kind not in ENTITIES:
            kind = RowKind.TIME_ENTRY
        entry = collected.entries.get(key)
        if entry is None:
            from_our_psa = key.split(":", 1)[0] in psa_slugs and key.count(":") >= 2
            if not from_our_psa and not exclusive:
                continue  # another legal entity's line in a shared ERP, or not this run's business
            psa_id = key.rsplit(":", 1)[-1] if from_our_psa else ""
            key = key if from_our_psa else f"{erp.slug}:line:{line_id}"
            entry = collected.entries.get(key)
            if entry is None:
                entry = collected.entries[key] = Entry(
                    key=key,
                    kind=kind,
                    psa_id=psa_id,
                    erp=erp.slug,
                    project=canonical_projects.get(str(line.get("project_id")), ""),
                    person=str(line.get("employee_ref") or ""),
                    date=str(line.get("date") or "")[:10],
                    currency=str(line.get("currency") or ""),
                    legal_entity_id=legal_entity.pk,
                )
        entry.posted_hours += hours
        entry.posted_amount += amount
        if amount < 0 or hours < 0:
            entry.reversed_amount += amount
        entry.erp_lines.append(line_id)


def _age_seconds(since: datetime.datetime | None, now: datetime.datetime) -> int | None:
    return int((now - since).total_seconds()) if since else None


def _hub_explain(collected: Collected, *, pairs: list[Pair], now: datetime.datetime) -> None:
    """What the hub holds for each entry: waiting and refused ledger lines, and the rest of an entry whose latest
    message waits in the queue or the pipeline (queued), corrections on their way and rejected entries
    (withdrawn)."""
    erp_by_slug = {pair.erp.slug: pair.erp for pair in pairs}
    psa_by_slug = {pair.psa.slug: pair.psa for pair in pairs}
    entries = [entry for entry in collected.entries.values() if entry.psa_id]
    keys = [entry.key for entry in entries]
    ledger: dict[str, list[Any]] = defaultdict(list)
    for chunk in _chunks(keys):
        rows = TimeExpensePosting.objects.filter(
            entry_key__in=chunk, target_system__in=list(erp_by_slug.values())
        ).values("entry_key", "kind", "status", "hours", "amount", "message_id", "created_at", "last_error")
        for row in rows:
            ledger[row["entry_key"]].append(row)
    latest: dict[tuple[int, str, str], Any] = {}
    for psa in psa_by_slug.values():
        for kind in ENTITIES:
            ids = [entry.psa_id for entry in entries if entry.kind == kind and entry.key.startswith(f"{psa.slug}:")]
            for chunk in _chunks(ids):
                for found in (
                    Message.objects.filter(flow=FLOW, system=psa, entity=kind, canonical_id__in=chunk)
                    .order_by("pk")
                    .values("pk", "canonical_id", "status", "correlation_id", "received_at")
                ):
                    latest[(psa.pk, kind, found["canonical_id"])] = found
    # An entry the PSA no longer shows as approved came from the ERP's side: its person is the one its latest
    # message names (the ERP's line may name the ERP's own employee instead).
    unnamed = {
        latest[(psa_by_slug[e.key.split(":", 1)[0]].pk, e.kind, e.psa_id)]["pk"]: e
        for e in entries
        if not e.approved_hours
        and not e.approved_amount
        and (psa_by_slug.get(e.key.split(":", 1)[0]) is not None)
        and (psa_by_slug[e.key.split(":", 1)[0]].pk, e.kind, e.psa_id) in latest
    }
    for chunk in _chunks(list(unnamed)):
        for pk, canonical in Message.objects.filter(pk__in=chunk).values_list("pk", "canonical_payload"):
            if isinstance(canonical, dict) and canonical.get("resource_id"):
                unnamed[pk].person = str(canonical["resource_id"])
    open_items: dict[int, list[Any]] = defaultdict(list)
    rejected: set[int] = set()
    message_ids = [message["pk"] for message in latest.values()]
    for chunk in _chunks(message_ids):
        for item in ExceptionItem.objects.filter(
            message_id__in=chunk, state__in=(ExceptionState.OPEN, ExceptionState.REJECTED)
        ).values("pk", "message_id", "state", "category", "reason", "created_at"):
            if item["state"] == ExceptionState.REJECTED:
                rejected.add(item["message_id"])
            else:
                open_items[item["message_id"]].append(item)
    for entry in entries:
        source = psa_by_slug.get(entry.key.split(":", 1)[0])
        message = latest.get((source.pk, entry.kind, entry.psa_id)) if source else None
        if message is not None:
            entry.message_id, entry.correlation_id = message["pk"], message["correlation_id"]
        posted_hours = posted_amount = pending_hours = pending_amount = ZERO
        pending_from_latest = False
        for row in ledger.get(entry.key, []):
            if row["status"] == PostingStatus.POSTED:
                posted_hours += row["hours"]
                posted_amount += row["amount"]
                continue
            pending_hours += row["hours"]
            pending_amount += row["amount"]
            pending_from_latest |= message is not None and row["message_id"] == message["pk"]
            refused = row["status"] == PostingStatus.FAILED
            if row["kind"] == PostingKind.POST:
                entry.queued_hours += row["hours"]
                entry.queued_amount += row["amount"]
            else:
                entry.withdrawn_hours += row["hours"]
                entry.withdrawn_amount += row["amount"]
            entry.queue.append(
                {
                    "item": None,
                    "category": "refused_by_erp" if refused else "waiting_to_send",
                    "reason": (f"The ERP refused the {row['kind']} line: {row['last_error']}"[:300])
                    if refused
                    else f"A {row['kind']} line waits to be sent to {entry.erp}.",
                    "since": row["created_at"].isoformat(),
                    "age_seconds": _age_seconds(row["created_at"], now),
                }
            )
        if message is None or pending_from_latest:
            continue
        # The latest version of the entry has not reached the ledger yet: the rest of it is held or on its way.
        rest_hours = entry.approved_hours - posted_hours - pending_hours
        rest_amount = entry.approved_amount - posted_amount - pending_amount
        items = open_items.get(message["pk"], [])
        if rest_hours == 0 and rest_amount == 0:
            continue
        if message["pk"] in rejected and not items:
            entry.withdrawn_hours += rest_hours
            entry.withdrawn_amount += rest_amount
            entry.queue.append(
                {
                    "item": None,
                    "category": "rejected",
                    "reason": "Finance rejected this version of the entry: it is not to be posted.",
                    "since": message["received_at"].isoformat(),
                    "age_seconds": _age_seconds(message["received_at"], now),
                }
            )
            continue
        if not items and message["status"] not in IN_FLIGHT:
            continue
        entry.queued_hours += rest_hours
        entry.queued_amount += rest_amount
        for item in items:
            entry.queue.append(
                {
                    "item": item["pk"],
                    "category": item["category"],
                    "reason": str(item["reason"])[:300],
                    "since": item["created_at"].isoformat(),
                    "age_seconds": _age_seconds(item["created_at"], now),
                }
            )
        if not items:
            entry.queue.append(
                {
                    "item": None,
                    "category": "in_pipeline",
                    "reason": f"Received by the hub, not posted yet (message {message['status']}).",
                    "since": message["received_at"].isoformat(),
                    "age_seconds": _age_seconds(message["received_at"], now),
                }
            )


# --- rows ------------------------------------------------------------------------------------------------------

ROW_FIGURES = (
    "approved_hours",
    "approved_amount",
    "posted_hours",
    "posted_amount",
    "reversed_amount",
    "queued_hours",
    "queued_amount",
    "withdrawn_hours",
    "withdrawn_amount",
    "unexplained_hours",
    "unexplained_amount",
)


def rows_build(*, run: ReconciliationRun, entries: Iterable[Entry]) -> list[ReconciliationRow]:
    """One row per (kind, project, person): the sums of its entries and the entries themselves, differing first."""
    groups: dict[tuple[str, str, str], list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[(entry.kind, entry.project, entry.person)].append(entry)
    rows = []
    for (kind, project, person), members in sorted(groups.items()):
        members.sort(key=lambda e: (e.unexplained_amount == 0 and e.unexplained_hours == 0, e.date, e.key))
        row = ReconciliationRow(
            run=run,
            legal_entity_id=run.legal_entity_id,
            period=run.period,
            kind=kind,
            project=project[:100],
            project_name=next((e.project_name for e in members if e.project_name), "")[:255],
            person=person[:100],
            person_name=next((e.person_name for e in members if e.person_name), "")[:255],
            currency=next((e.currency for e in members if e.currency), "")[:3],
            queue_reasons=[reason for e in members for reason in e.queue][:50],
            entries=[e.as_dict() for e in members],
        )
        for name in ROW_FIGURES:
            setattr(row, name, sum((getattr(e, name) for e in members), ZERO).quantize(CENT))
        rows.append(row)
    return rows


def figures_of(rows: list[ReconciliationRow], collected: Collected, seconds: float) -> dict[str, Any]:
    """The run's totals per kind and over all, and what was read."""
    totals: dict[str, dict[str, str]] = {}
    for kind in ENTITIES:
        of_kind = [row for row in rows if row.kind == kind]
        totals[kind] = {name: str(sum((getattr(r, name) for r in of_kind), ZERO)) for name in ROW_FIGURES}
    return {
        "totals": totals,
        "rows": len(rows),
        "entries": sum(len(row.entries) for row in rows),
        "differences": sum(1 for row in rows if row.has_difference),
        "pages": dict(collected.pages),
        "records_read": dict(collected.records),
        "unmapped": collected.unmapped[:20],
        "unmapped_count": len(collected.unmapped),
        "seconds": round(seconds, 2),
    }


# --- exception items -------------------------------------------------------------------------------------------


def _difference_reason(row: ReconciliationRow, entity_code: str) -> str:
    who = f"{row.person_name or row.person or 'no person'}"
    what = f"{row.get_kind_display().lower()} of project {row.project_name or row.project or '?'}"
    return (
        f"Reconciliation {entity_code} {row.period}: {what}, {who}: approved {row.approved_hours} h / "
        f"{row.approved_amount} {row.currency}, posted in the ERP {row.posted_hours} h / {row.posted_amount}, "
        f"queued {row.queued_amount}, withdrawn {row.withdrawn_amount}: {row.unexplained_hours} h / "
        f"{row.unexplained_amount} {row.currency} unexplained."
    )


def difference_items_sync(*, run: ReconciliationRun, rows: list[ReconciliationRow]) -> dict[str, int]:
    """One open item per differing row (found again by its key: updated, never a second one), and every open
    item of this entity and period whose difference is gone resolved with a decision naming the run."""
    entity = run.legal_entity
    prefix = f"recon:{entity.pk}:{run.period}:"
    open_items = {
        item.external_id: item
        for item in ExceptionItem.objects.select_for_update().filter(
            category=ExceptionCategory.RECONCILIATION_DIFFERENCE,
            state=ExceptionState.OPEN,
            external_id__startswith=prefix,
        )
    }
    erp = ConnectedSystem.objects.filter(slug__in={e.get("erp") for r in rows for e in r.entries}).first()
    counts = {"opened": 0, "updated": 0, "resolved": 0}
    differing = set()
    for row in rows:
        if not row.has_difference:
            continue
        key = row.difference_key
        differing.add(key)
        reason = _difference_reason(row, entity.code)
        snapshot = {
            "run": run.pk,
            "period": run.period,
            "kind": row.kind,
            "project": row.project,
            "person": row.person,
            **{name: str(getattr(row, name)) for name in ROW_FIGURES},
            "entries": [
                e for e in row.entries if e["unexplained_amount"] != "0.00" or e["unexplained_hours"] != "0.00"
            ][:50],
        }
        item = open_items.get(key)
        if item is not None:
            item.reason, item.amount, item.payload_snapshot = reason, row.unexplained_amount, snapshot
            item.save(update_fields=["reason", "amount", "payload_snapshot", "updated_at"])
            counts["updated"] += 1
        else:
            item = exception_item_open(
                category=ExceptionCategory.RECONCILIATION_DIFFERENCE,
                reason=reason,
                system=erp,
                legal_entity=entity,
                payload_snapshot=snapshot,
                amount=row.unexplained_amount,
                currency=row.currency,
                flow=FLOW,
                external_id=key,
                suggested_action=(
                    "Open the reconciliation row and its entries: post what is missing, or correct the ERP or the "
                    "PSA. The item resolves itself at the first run in which the difference is gone."
                ),
            )
            counts["opened"] += 1
        row.exception_item = item
    for key, item in open_items.items():
        if key in differing:
            continue
        item.state = ExceptionState.RESOLVED
        item.save(update_fields=["state", "updated_at"])
        decision_record(
            item=item,
            action=DecisionAction.RESOLVE,
            user=None,
            reason=f"The difference is gone in reconciliation run #{run.pk} ({run.period}).",
        )
        counts["resolved"] += 1
    return counts


# --- runs ------------------------------------------------------------------------------------------------------


def _require_scope(user: Any, api_key: Any, legal_entity: LegalEntity) -> None:
    entities = entity_scope_of(user, api_key)
    if entities is not None and legal_entity.pk not in entities:
        raise HubValidationError(
            f"legal_entity {legal_entity.code} is not in your legal-entity scope.",
            errors=[{"field": "legal_entity", "message": "Choose a legal entity you are granted."}],
        )


@transaction.atomic
def reconciliation_run_start(
    *,
    legal_entity: LegalEntity,
    period: str,
    trigger: str = RunTrigger.MANUAL,
    user: Any = None,
    api_key: Any = None,
    request: Any = None,
) -> ReconciliationRun:
    """Queue a run for an entity's period (a person's or a key's: permission, scope and an audit event). A run
    of the same entity and period already queued or running is answered instead of a second one."""
    start, end = period_bounds(period)
    if trigger != RunTrigger.SCHEDULE:
        if user is None or not user.has_perm(PERM_RUN):
            raise PermissionDenied(f"Starting a reconciliation needs the permission {PERM_RUN}.")
        _require_scope(user, api_key, legal_entity)
    if not reconciliation_pairs(legal_entity=legal_entity):
        raise HubConflictError(
            f"{legal_entity.code} has no active route of the time and expense flow: nothing to reconcile.",
            hint="Add a route from the PSA to the entity's ERP with the flow 'Approved time and expense to ERP'.",
        )
    LegalEntity.objects.select_for_update().filter(pk=legal_entity.pk).first()  # one start at a time per entity
    active = ReconciliationRun.objects.filter(
        legal_entity=legal_entity, period=period, status__in=ACTIVE_RUN_STATUSES
    ).first()
    if active is not None:
        return active
    run = ReconciliationRun.objects.create(
        legal_entity=legal_entity,
        period=period,
        period_start=start,
        period_end=end,
        trigger=trigger,
        started_by=user if trigger != RunTrigger.SCHEDULE else None,
        correlation_id=new_correlation_id(),
    )
    if trigger != RunTrigger.SCHEDULE:
        audit_record(
            action=AuditAction.RECONCILIATION_RUN_STARTED,
            actor=user,
            api_key=api_key,
            request=request,
            object_type="reconciliation.reconciliationrun",
            object_id=run.pk,
            summary=f"Reconciliation of {legal_entity.code} {period} started ({trigger})",
            details={"period": period, "trigger": trigger},
            correlation_id=run.correlation_id,
        )
    from reconciliation.tasks import reconciliation_run_task

    enqueue_on_commit(reconciliation_run_task, run.pk, queue="housekeeping")
    return run


def reconciliation_schedule_tick(*, today: datetime.date | None = None) -> list[int]:
    """Beat: queue a run of this month and the last for every entity with routes (a failed run is thereby tried
    again on the schedule); an entity's period already queued or running is left alone."""
    today = today or timezone.localdate()
    started = []
    for legal_entity in reconcilable_entities():
        for period in periods_due(today=today):
            run = reconciliation_run_start(legal_entity=legal_entity, period=period, trigger=RunTrigger.SCHEDULE)
            started.append(run.pk)
    return started


def reconciliation_run_execute(*, run_id: int) -> ReconciliationRun:
    """Carry a queued run out: read both systems, explain every entry, store the rows and figures, sync the
    difference items. A system that cannot be read fails the run (naming it); the last good run stays shown."""
    with transaction.atomic():
        run = ReconciliationRun.objects.select_for_update().select_related("legal_entity").get(pk=run_id)
        if run.status != RunStatus.QUEUED:
            return run  # a duplicate delivery of the task, or a run already carried out
        run.status, run.started_at = RunStatus.RUNNING, timezone.now()
        run.save(update_fields=["status", "started_at"])
    began = time.perf_counter()
    pairs = reconciliation_pairs(legal_entity=run.legal_entity)
    run.systems = [{"psa": p.psa.slug, "erp": p.erp.slug, "kind": p.kind} for p in pairs]
    collected = Collected()
    correlation_id = run.correlation_id or uuid.uuid4().hex
    try:
        for pair in pairs:
            _psa_entries(
                pair,
                legal_entity=run.legal_entity,
                start=run.period_start,
                end=run.period_end,
                correlation_id=correlation_id,
                collected=collected,
            )
        for erp in {pair.erp.pk: pair.erp for pair in pairs}.values():
            _erp_lines(
                erp,
                [pair for pair in pairs if pair.erp.pk == erp.pk],
                legal_entity=run.legal_entity,
                start=run.period_start,
                end=run.period_end,
                correlation_id=correlation_id,
                collected=collected,
            )
    except SystemReadError as exc:
        return _run_fail(run, exc.system, exc.detail)
    now = timezone.now()
    _hub_explain(collected, pairs=pairs, now=now)
    with transaction.atomic():
        rows = rows_build(run=run, entries=collected.entries.values())
        counts = difference_items_sync(run=run, rows=rows)
        ReconciliationRow.objects.bulk_create(rows, batch_size=500)
        run.status, run.finished_at = RunStatus.SUCCEEDED, timezone.now()
        run.figures = {**figures_of(rows, collected, time.perf_counter() - began), "items": counts}
        run.differences = run.figures["differences"]
        run.unexplained_amount = sum((row.unexplained_amount for row in rows), ZERO)
        run.error = ""
        run.save()
    logger.info(
        "reconciliation run done",
        extra={"run": run.pk, "entries": run.figures["entries"], "differences": run.differences},
    )
    return run


def _run_fail(run: ReconciliationRun, system: ConnectedSystem, detail: str) -> ReconciliationRun:
    last_good = (
        ReconciliationRun.objects.filter(
            legal_entity_id=run.legal_entity_id, period=run.period, status=RunStatus.SUCCEEDED
        )
        .order_by("-finished_at")
        .first()
    )
    shown = (
        f" The last good result (run #{last_good.pk}, {last_good.finished_at:%Y-%m-%d %H:%M} UTC) stays shown."
        if last_good and last_good.finished_at
        else " No earlier result exists for this period."
    )
    run.status, run.finished_at, run.failed_system = RunStatus.FAILED, timezone.now(), system
    run.error = (
        f"{detail}{shown} The scheduled reconciliation tries again; check that {system.slug} answers (its "
        "connection test in the admin) or run it again now."
    )[:4000]
    run.save(update_fields=["status", "finished_at", "failed_system", "error", "systems"])
    logger.warning("reconciliation run failed", extra={"run": run.pk, "system": system.slug})
    return run
