"""Resources: which ERP employee books a PSA person's time, per ERP and legal entity (services and selectors).

A ResourceLink is the person's cross-reference: (PSA, person id) ↔ (ERP, employee id), for one legal entity or
for every entity the ERP serves. The time and expense flow reads it for every line it plans (the employee the
line is booked to) and holds an entry whose person has no employee in an ERP that needs one as an
`unknown_resource` exception item. Saving a link (in the admin, the API, an import, or the item's one-click
"Link the resource" action) is recorded in the link's history and the audit trail, and releases the entries held
for that person and ERP: they run through every check again and are posted once, to the linked employee.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import methodcaller
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from exception_queue.services import PERM_FIX, decision_record, locked_open_item, require_permission, require_reason
from governance.choices import Flow
from integrationhub.audit import audit_record
from integrationhub.errors import HubConflictError, HubError, HubValidationError
from workflows.models import ResourceLink
from workflows.services import connector_offers, flow_call

FLOW = Flow.TIME_EXPENSE_TO_ERP
PERM_LINK = "workflows.add_resourcelink"
# Audit actions (the audit log's action column is free text; these name what happened to a resource link).
AUDIT_LINK_SAVED = "resource_link.saved"
AUDIT_LINK_DELETED = "resource_link.deleted"
REASON_MAX_LENGTH = 100  # simple-history's history_change_reason column
# What an unknown_resource item keeps in its payload snapshot to name the person and the ERP.
HELD_PERSON_KEY = "unknown_resource"


# --- selectors -----------------------------------------------------------------------------------------------


def resource_link_for(
    *, psa_system_id: int, person_ref: str, erp_system_id: int, legal_entity_id: int | None
) -> ResourceLink | None:
    """The link that books this person's time in this ERP: the legal entity's own, else the ERP-wide one."""
    candidates = ResourceLink.objects.filter(
        psa_system_id=psa_system_id, person_ref=str(person_ref), erp_system_id=erp_system_id
    ).filter(Q(legal_entity_id=legal_entity_id) | Q(legal_entity__isnull=True))
    links = list(candidates)
    own = [link for link in links if legal_entity_id is not None and link.legal_entity_id == legal_entity_id]
    enterprise = [link for link in links if link.legal_entity_id is None]
    return (own or enterprise)[0] if own or enterprise else None


def resource_links_list() -> QuerySet[ResourceLink]:
    """Every link with what its pages show, for the admin and the API (which scope it by legal entity)."""
    return ResourceLink.objects.select_related("psa_system", "erp_system", "legal_entity")


def erp_requires_employee(system: ConnectedSystem) -> bool:
    """Whether the ERP's lines need an employee (its connector says so): entries of unlinked people wait there."""
    from connectors.registry import registry

    try:
        return bool(getattr(registry.get(system.connector_type), "requires_employee", False))
    except HubError:
        return False


@dataclass(frozen=True)
class EmployeeChoices:
    """The employees a person can pick from in an ERP, or why there is no list (then the id is typed)."""

    employees: list[dict[str, str]]
    note: str = ""


def erp_employees(*, erp_system: ConnectedSystem) -> EmployeeChoices:
    """The ERP's employees, read through the transport when its connector can list them; otherwise an empty
    list and a note saying to type the employee's id."""
    if not connector_offers(erp_system, "employees_list"):
        return EmployeeChoices([], f"{erp_system.slug} cannot list its employees: type the employee's id.")
    try:
        employees = flow_call(
            erp_system, "employees_list", methodcaller("employees_list"), flow=FLOW, step="list_employees"
        )
    except (ConnectorError, HubError) as exc:
        detail = str(getattr(exc, "detail", exc))
        return EmployeeChoices([], f"{erp_system.slug} did not list its employees ({detail}): type the id.")
    return EmployeeChoices([{"id": str(row["id"]), "name": str(row.get("name") or row["id"])} for row in employees])


# --- services ------------------------------------------------------------------------------------------------


def _stamp(link: ResourceLink, *, user: Any, reason: str) -> None:
    if user is not None and getattr(user, "is_authenticated", False):
        link._history_user = user  # type: ignore[attr-defined]
    link._change_reason = (reason or "changed")[:REASON_MAX_LENGTH]  # type: ignore[attr-defined]


def _summary(link: ResourceLink) -> str:
    entity = link.legal_entity.code if link.legal_entity is not None else "every legal entity"
    person = f"{link.person_name} ({link.person_ref})" if link.person_name else link.person_ref
    return f"{link.psa_system.slug} person {person} → {link.erp_system.slug} employee {link.employee_ref} ({entity})"


@transaction.atomic
def resource_link_save(
    *, link: ResourceLink, user: Any = None, reason: str = "", release_held: bool = True
) -> ResourceLink:
    """Validate and save a link (history and audit with who and why); then the entries held because this person
    had no employee in this ERP are released, so they are posted to the linked employee."""
    before = ResourceLink.objects.filter(pk=link.pk).values("employee_ref").first() if link.pk else None
    link.full_clean()
    _stamp(link, user=user, reason=reason or ("changed" if before else "created"))
    link.save()
    audit_record(
        action=AUDIT_LINK_SAVED,
        actor=user,
        object_type="workflows.resourcelink",
        object_id=link.pk,
        summary=_summary(link),
        details={
            "employee_before": before["employee_ref"] if before else None,
            "employee_after": link.employee_ref,
            "reason": reason,
        },
    )
    if release_held:
        held_entries_release(link=link, user=user, reason=reason or "resource linked")
    return link


@transaction.atomic
def resource_link_delete(*, link: ResourceLink, user: Any = None, reason: str = "") -> None:
    """Delete a link (history and audit); that person's next entries for the ERP wait for a new one."""
    summary = _summary(link)
    pk = link.pk
    _stamp(link, user=user, reason=reason or "deleted")
    link.delete()
    audit_record(
        action=AUDIT_LINK_DELETED,
        actor=user,
        object_type="workflows.resourcelink",
        object_id=pk,
        summary=summary,
        details={"reason": reason},
    )


def held_items_of(link: ResourceLink) -> QuerySet[ExceptionItem]:
    """The open unknown_resource items this link answers: the same PSA person and ERP (and legal entity, when
    the link names one)."""
    items = ExceptionItem.objects.filter(
        category=ExceptionCategory.UNKNOWN_RESOURCE,
        state=ExceptionState.OPEN,
        system_id=link.erp_system_id,
        message__system_id=link.psa_system_id,
        payload_snapshot__unknown_resource__person_ref=link.person_ref,
    )
    if link.legal_entity_id is not None:
        items = items.filter(legal_entity_id=link.legal_entity_id)
    return items.select_related("message").order_by("pk")


def held_entries_release(*, link: ResourceLink, user: Any, reason: str, first: ExceptionItem | None = None) -> int:
    """Close every open item of the person and ERP with a decision (audited) and run their entries again; they
    find the employee now. Returns how many entries were released."""
    from sync.services import message_replay

    released = 0
    items = list(held_items_of(link))
    if first is not None and first.pk not in {item.pk for item in items}:
        items.insert(0, first)
    for item in items:
        item = locked_open_item(item)
        note = f" (linked on item #{first.pk})" if first is not None and item.pk != first.pk else ""
        decision_record(
            item=item,
            message=item.message,
            action=DecisionAction.LINK_RESOURCE,
            user=user if getattr(user, "is_authenticated", False) else None,
            reason=f"{reason}{note}"[:2000],
            payload_diff=[{"path": "employee_id", "before": None, "after": link.employee_ref, "change": "added"}],
        )
        item.state = ExceptionState.REPLAYED
        item.save(update_fields=["state", "updated_at"])
        if item.message is not None:
            message = item.message
            if message.raw_payload is None and message.canonical_payload is not None:
                message_replay(message=message, use_original_mapping=True, canonical_payload=message.canonical_payload)
            else:
                message_replay(message=message, use_original_mapping=True)
        released += 1
    return released


@transaction.atomic
def exception_item_link_resource(
    *, item: ExceptionItem, user: Any, reason: str, employee: str = "", employee_name: str = ""
) -> ExceptionItem:
    """The one-click answer to an unknown_resource item: link the person to `employee` in the item's ERP (a
    resource link for the item's legal entity, audited), then post every entry held for that person there."""
    require_permission(user, PERM_FIX)
    require_permission(user, PERM_LINK)
    reason = require_reason(reason)
    item = locked_open_item(item)
    held = (item.payload_snapshot or {}).get(HELD_PERSON_KEY) if isinstance(item.payload_snapshot, dict) else None
    if item.category != ExceptionCategory.UNKNOWN_RESOURCE or not held or item.message is None:
        raise HubConflictError(
            f"Exception item #{item.pk} is not an unknown-resource item of an entry; there is no person to link.",
            hint="Replay, fix and replay, or reject it instead.",
        )
    employee = str(employee or "").strip()
    if not employee:
        raise HubValidationError(
            "Choose the ERP employee the person's time is booked to.",
            errors=[{"field": "employee", "message": "This field is required."}],
        )
    erp = ConnectedSystem.objects.get(pk=held["erp_system_id"])
    choices = erp_employees(erp_system=erp).employees
    if choices:
        known = {row["id"]: row["name"] for row in choices}
        if employee not in known:
            raise HubValidationError(
                f"{erp.slug} has no employee {employee!r}; choose one it lists.",
                errors=[{"field": "employee", "message": f"Not an employee of {erp.slug}."}],
            )
        employee_name = employee_name or known[employee]
    legal_entity = item.legal_entity
    link = resource_link_for(
        psa_system_id=int(held["psa_system_id"]),
        person_ref=str(held["person_ref"]),
        erp_system_id=erp.pk,
        legal_entity_id=item.legal_entity_id,
    )
    if link is None or link.legal_entity_id != item.legal_entity_id:
        link = ResourceLink(
            psa_system_id=int(held["psa_system_id"]),
            person_ref=str(held["person_ref"]),
            person_name=str(held.get("person_name") or ""),
            erp_system=erp,
            legal_entity=legal_entity,
        )
    link.employee_ref = employee
    link.employee_name = employee_name or link.employee_name
    resource_link_save(
        link=link, user=user, reason=f"linked on exception item #{item.pk}: {reason}", release_held=False
    )
    held_entries_release(link=link, user=user, reason=reason, first=item)
    item.refresh_from_db()
    return item


def _employee_choices(item: ExceptionItem) -> dict[str, list[tuple[str, str]]]:
    """The employees of the item's ERP to pick from (none when it cannot list them: the id is typed)."""
    held = (item.payload_snapshot or {}).get(HELD_PERSON_KEY) if isinstance(item.payload_snapshot, dict) else None
    erp_id = (held or {}).get("erp_system_id")
    erp = ConnectedSystem.objects.filter(pk=erp_id).first() if erp_id else None
    if erp is None:
        return {}
    employees = erp_employees(erp_system=erp).employees
    return {"employee": [(row["id"], f"{row['name']} ({row['id']})") for row in employees]}


def _register() -> None:
    from exception_queue.actions import ItemAction, register_item_action

    register_item_action(
        ItemAction(
            action=DecisionAction.LINK_RESOURCE,
            label="Link the resource",
            permission=PERM_LINK,
            handler=exception_item_link_resource,
            category=ExceptionCategory.UNKNOWN_RESOURCE,
            needs_message=True,
            inputs=("employee",),
            input_choices=_employee_choices,
            help_text="Choose the ERP employee this person's time is booked to; the link is saved (audited) and "
            "every entry held for the person in this ERP is posted.",
        )
    )


_register()
