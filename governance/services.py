"""Services of the governance app: every write to legal entities, ownership rules, rate cards and sync policies."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.db.models import Model, ProtectedError
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.validators import crontab_validator

from governance import flows, selectors
from governance.choices import ErpPeriodState, PeriodStatus, Trigger
from governance.models import AccountingPeriod, LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from integrationhub.errors import HubConflictError, HubValidationError
from mappings.models import CanonicalEntity

logger = logging.getLogger(__name__)

SYNC_POLICY_TASK = "governance.tasks.sync_policy_run_task"
SYNC_POLICY_QUEUE = "housekeeping"
CRON_PARTS = ("minute", "hour", "day of month", "month", "day of week")
REASON_MAX_LENGTH = 100  # simple-history's history_change_reason column


def _stamp(instance: Model, *, user: Any = None, reason: str = "") -> None:
    # simple-history reads these two attributes when it writes the history row of the next save/delete.
    if user is not None and getattr(user, "is_authenticated", False):
        instance._history_user = user  # type: ignore[attr-defined]
    if reason:
        instance._change_reason = reason[:REASON_MAX_LENGTH]  # type: ignore[attr-defined]


def _save(instance: Model, *, user: Any, reason: str) -> None:
    instance.full_clean()
    _stamp(instance, user=user, reason=reason)
    instance.save()


def _delete(instance: Model, *, user: Any, reason: str) -> None:
    _stamp(instance, user=user, reason=reason or "deleted")
    try:
        instance.delete()
    except ProtectedError as exc:
        users = sorted({f"{type(obj)._meta.verbose_name} '{obj}'" for obj in exc.protected_objects})
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise HubConflictError(
            f"{str(type(instance)._meta.verbose_name).capitalize()} '{instance}' is still used by {shown}.",
            hint="Delete or re-point those records first.",
        ) from exc


# --- legal entities and ownership rules ---------------------------------------------------------------


@transaction.atomic
def legal_entity_save(*, legal_entity: LegalEntity, user: Any = None, reason: str = "") -> LegalEntity:
    """Validate and save a legal entity, recording who and why in its history."""
    _save(legal_entity, user=user, reason=reason)
    return legal_entity


@transaction.atomic
def accounting_period_save(*, period: AccountingPeriod, user: Any = None, reason: str = "") -> AccountingPeriod:
    """Validate and save an accounting period (open or closed), recording who and why in its history."""
    if period.legal_entity_id:
        # Serialise period writes per legal entity so two concurrent saves cannot both pass the overlap check.
        LegalEntity.objects.select_for_update().filter(pk=period.legal_entity_id).first()
    _save(period, user=user, reason=reason)
    return period


# --- the period pull: the ERPs' period states into the period calendar ----------------------------------------

ERP_CLOSED_STATES = (ErpPeriodState.CLOSED, ErpPeriodState.LOCKED)


@dataclass
class PeriodPullResult:
    """What one period pull of one ERP did: periods read, created, closed, reopened, unchanged, and the ones it
    could not take (each with the reason and what to do)."""

    system: str
    read: int = 0
    created: int = 0
    closed: int = 0
    reopened: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def accounting_periods_apply(*, system: Any, periods: Iterable[Mapping[str, Any]]) -> PeriodPullResult:
    """Bring the period calendar in step with `periods` as `system` (an ERP) reported them
    (governance.period_pull reads them through the transport). Idempotent: periods unchanged since the last pull
    write nothing (no history row).

    The rules: a period new to the hub is created with the ERP's state; a period the ERP holds closed or locked
    is closed here (the hub never stays open after the ERP); a period the ERP reopened (it held it closed at the
    last pull) is reopened here; otherwise finance's own decision stands (a period finance closed in the hub
    stays closed while the ERP has it open). A hand-kept period with the same legal entity and dates is adopted.
    Every change is saved with no user and the reason "period pull from <system>", so the history shows it came
    from the ERP and not from a person."""
    result = PeriodPullResult(system=system.slug)
    entities = {entity.code: entity for entity in system.legal_entities.all()}
    for period in periods:
        result.read += 1
        try:
            with transaction.atomic():
                _period_apply(system=system, period=period, entities=entities, result=result)
        except (ValidationError, HubValidationError) as exc:
            detail = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in _errors_of(exc).items())
            result.skipped.append({"external_id": str(period.get("external_id", "")), "reason": detail})
    AccountingPeriod.objects.filter(source_system=system).update(erp_synced_at=timezone.now())
    if result.skipped:
        logger.warning("period pull skipped periods", extra={"system": system.slug, "skipped": result.skipped})
    return result


def _errors_of(exc: Exception) -> dict[str, list[str]]:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return {name: [str(m) for e in errors for m in e.messages] for name, errors in exc.error_dict.items()}
    if isinstance(exc, ValidationError):
        return {NON_FIELD_ERRORS: [str(m) for m in exc.messages]}
    return {"period": [str(getattr(exc, "detail", exc))]}


def _period_apply(*, system: Any, period: Mapping[str, Any], entities: Mapping[str, LegalEntity], result: Any) -> None:
    external_id = str(period.get("external_id") or "")
    code = str(period.get("legal_entity") or "")
    if code:
        entity = entities.get(code)
        if entity is None:
            raise HubValidationError(
                f"Period {external_id} of {system.slug} is for legal entity {code}, which the system does not serve; "
                f"add {code} to the system's legal entities."
            )
    elif len(entities) == 1:
        entity = next(iter(entities.values()))
    else:
        raise HubValidationError(
            f"{system.slug} serves {len(entities)} legal entities and its period {external_id} names none; give the "
            "system exactly one legal entity (one ERP company per connected system)."
        )
    state = str(period.get("state") or "")
    if state not in ErpPeriodState.values:
        raise HubValidationError(f"Period {external_id} of {system.slug} has the unknown state {state!r}.")
    try:
        start = datetime.date.fromisoformat(str(period.get("start_date")))
        end = datetime.date.fromisoformat(str(period.get("end_date")))
    except ValueError:
        raise HubValidationError(f"Period {external_id} of {system.slug} has no valid start and end dates.") from None
    erp_closed = state in ERP_CLOSED_STATES
    LegalEntity.objects.select_for_update().filter(pk=entity.pk).first()  # as accounting_period_save: one writer
    existing = (
        AccountingPeriod.objects.select_for_update().filter(source_system=system, external_id=external_id).first()
        or AccountingPeriod.objects.select_for_update()
        .filter(legal_entity=entity, start_date=start, end_date=end, external_id="")
        .first()
    )
    reason = f"period pull from {system.slug}"
    if existing is None:
        created = AccountingPeriod(
            legal_entity=entity,
            name=str(period.get("name") or "")[:50],
            start_date=start,
            end_date=end,
            status=PeriodStatus.CLOSED if erp_closed else PeriodStatus.OPEN,
            source_system=system,
            external_id=external_id,
            erp_state=state,
        )
        _save(created, user=None, reason=f"{reason}: {state} in the ERP")
        result.created += 1
        return
    status = existing.status
    if erp_closed:
        status = PeriodStatus.CLOSED
    elif existing.erp_state in ERP_CLOSED_STATES:
        status = PeriodStatus.OPEN  # the ERP reopened it since the last pull
    wanted = {
        "legal_entity_id": entity.pk,
        "start_date": start,
        "end_date": end,
        "status": status,
        "source_system_id": system.pk,
        "external_id": external_id,
        "erp_state": state,
    }
    if not existing.name and period.get("name"):
        wanted["name"] = str(period["name"])[:50]
    if all(getattr(existing, name) == value for name, value in wanted.items()):
        result.unchanged += 1
        return
    before = existing.status
    for name, value in wanted.items():
        setattr(existing, name, value)
    if status != before:
        verb = "closed" if status == PeriodStatus.CLOSED else "reopened"
        setattr(result, verb, getattr(result, verb) + 1)
        reason = f"{reason}: {verb}, {state} in the ERP"
    else:
        result.updated += 1
    _save(existing, user=None, reason=reason)


@transaction.atomic
def legal_entity_delete(*, legal_entity: LegalEntity, user: Any = None, reason: str = "") -> None:
    """Delete a legal entity; refused by the database while rate cards or policies still point at it."""
    _delete(legal_entity, user=user, reason=reason)


@transaction.atomic
def ownership_rule_save(*, rule: OwnershipRule, user: Any = None, reason: str = "") -> OwnershipRule:
    """Validate (including conflicts with other rules) and save an ownership rule."""
    if rule.entity_id:
        # Serialise rule writes per entity so two concurrent saves cannot both pass the conflict check.
        CanonicalEntity.objects.select_for_update().filter(pk=rule.entity_id).first()
    _save(rule, user=user, reason=reason)
    return rule


@transaction.atomic
def ownership_rule_delete(*, rule: OwnershipRule, user: Any = None, reason: str = "") -> None:
    """Delete an ownership rule, recording who and why."""
    _delete(rule, user=user, reason=reason)


# --- rate cards ---------------------------------------------------------------------------------------

LINE_FIELDS = ("role", "bill_rate", "cost_rate", "unit")


@transaction.atomic
def rate_card_save(
    *,
    rate_card: RateCard,
    lines: Iterable[Mapping[str, Any]] | None = None,
    user: Any = None,
    reason: str = "",
) -> RateCard:
    """Validate and save a rate card; with `lines`, make its lines exactly those (matched by role).

    Every line error is reported at once as `lines[i].field`, and nothing is saved if any is wrong.
    """
    if rate_card.legal_entity_id:
        # Serialise card writes per legal entity so two concurrent saves cannot both pass the overlap check.
        LegalEntity.objects.select_for_update().filter(pk=rate_card.legal_entity_id).first()
    _save(rate_card, user=user, reason=reason)
    if lines is None:
        return rate_card
    wanted = [dict(line) for line in lines]
    existing = {line.role: line for line in rate_card.lines.all()}
    errors: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    to_save: list[RateCardLine] = []
    for index, data in enumerate(wanted):
        role = str(data.get("role", "")).strip()
        if role in seen:
            errors[f"lines[{index}].role"] = [f"Role {role!r} is already on line {seen[role]}; list each role once."]
            continue
        seen[role] = index
        line = existing.get(role) or RateCardLine(rate_card=rate_card)
        for name in LINE_FIELDS:
            if name in data:
                setattr(line, name, role if name == "role" else data[name])
        try:
            line.full_clean(exclude=["rate_card"])
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                key = f"lines[{index}]" if name == NON_FIELD_ERRORS else f"lines[{index}].{name}"
                errors.setdefault(key, []).extend(messages)
        to_save.append(line)
    if errors:
        raise ValidationError(errors)
    for line in to_save:
        _stamp(line, user=user, reason=reason)
        line.save()
    for role, line in existing.items():
        if role not in seen:
            _delete(line, user=user, reason=reason)
    return rate_card


@transaction.atomic
def rate_card_line_save(*, line: RateCardLine, user: Any = None, reason: str = "") -> RateCardLine:
    """Validate and save one line of a rate card."""
    _save(line, user=user, reason=reason)
    return line


@transaction.atomic
def rate_card_delete(*, rate_card: RateCard, user: Any = None, reason: str = "") -> None:
    """Delete a rate card and its lines; each line's history row carries the same user and reason."""
    for line in rate_card.lines.all():
        _delete(line, user=user, reason=reason)
    _delete(rate_card, user=user, reason=reason)


# --- sync policies ------------------------------------------------------------------------------------


def cron_validate(*, expression: str) -> str:
    """Return "" for a valid five-field cron expression, else a message naming the part that is wrong."""
    parts = expression.split()
    if len(parts) != len(CRON_PARTS):
        return (
            f"Use five fields (minute hour day-of-month month day-of-week), for example '0 2 * * 1-5'; "
            f"{expression!r} has {len(parts)}."
        )
    for index, (name, part) in enumerate(zip(CRON_PARTS, parts, strict=True)):
        tab = ["*"] * len(CRON_PARTS)
        tab[index] = part
        try:
            crontab_validator(" ".join(tab))
        except ValidationError:
            return f"The {name} field {part!r} is not valid cron; for example use '*', '5', '1-5', '*/15' or '1,3'."
    return ""


@transaction.atomic
def sync_policy_save(*, policy: SyncPolicy, user: Any = None, reason: str = "") -> SyncPolicy:
    """Validate and save a sync policy and keep its beat schedule (PeriodicTask) in step with it."""
    _save(policy, user=user, reason=reason)
    _sync_policy_schedule(policy)
    return policy


@transaction.atomic
def sync_policy_delete(*, policy: SyncPolicy, user: Any = None, reason: str = "") -> None:
    """Delete a sync policy and its beat schedule."""
    task_id = policy.periodic_task_id
    _delete(policy, user=user, reason=reason)
    if task_id:
        PeriodicTask.objects.filter(pk=task_id).delete()


def _schedule_name(policy: SyncPolicy) -> str:
    return f"sync policy #{policy.pk}: {policy.name}"[:200]


def _sync_policy_schedule(policy: SyncPolicy) -> None:
    task = PeriodicTask.objects.filter(pk=policy.periodic_task_id).first() if policy.periodic_task_id else None
    if policy.trigger != Trigger.SCHEDULE:
        # Only a scheduled policy has a schedule; an event or manual policy must not keep firing.
        if task is not None:
            task.delete()
        policy.periodic_task = None
        return
    minute, hour, day_of_month, month_of_year, day_of_week = policy.cron.split()
    cron = {
        "minute": minute,
        "hour": hour,
        "day_of_month": day_of_month,
        "month_of_year": month_of_year,
        "day_of_week": day_of_week,
        "timezone": "UTC",
    }
    schedule = CrontabSchedule.objects.filter(**cron).order_by("id").first() or CrontabSchedule.objects.create(**cron)
    values = {
        "name": _schedule_name(policy),
        "task": SYNC_POLICY_TASK,
        "crontab": schedule,
        "interval": None,
        "args": json.dumps([policy.pk]),
        "kwargs": "{}",
        "queue": SYNC_POLICY_QUEUE,
        "exchange": SYNC_POLICY_QUEUE,
        "routing_key": SYNC_POLICY_QUEUE,
        "enabled": policy.active,
        "description": f"Runs the {policy.get_flow_display()} flow for sync policy {policy.name}.",
    }
    if task is None:
        # A task left behind by a policy removed outside this service is adopted instead of clashing on name.
        task = PeriodicTask.objects.filter(args=values["args"], task=SYNC_POLICY_TASK).first() or PeriodicTask()
    for name, value in values.items():
        setattr(task, name, value)
    task.save()  # save() (not update()) so beat's change marker moves and it reloads the schedule
    if policy.periodic_task_id != task.pk:
        # A plain UPDATE: the link is excluded from history and must not add a second history row.
        SyncPolicy.objects.filter(pk=policy.pk).update(periodic_task=task)
        policy.periodic_task = task


def sync_policy_run(*, policy_id: int) -> flows.FlowRunResult:
    """Start the flow runner registered for the policy's flow; a missing runner or policy is logged, not raised."""
    policy = selectors.sync_policy_get(policy_id=policy_id)
    if policy is None:
        logger.warning("sync policy no longer exists; skipping its run", extra={"policy_id": policy_id})
        return flows.FlowRunResult(
            policy_id, "", flows.FlowRunStatus.POLICY_MISSING, f"Sync policy {policy_id} no longer exists."
        )
    if not policy.active:
        return flows.FlowRunResult(
            policy_id, policy.flow, flows.FlowRunStatus.POLICY_INACTIVE, f"Sync policy {policy.name} is inactive."
        )
    runner = flows.flow_runner_get(policy.flow)
    if runner is None:
        logger.warning(
            "no flow runner is registered for flow %s; sync policy %s did nothing",
            policy.flow,
            policy.name,
            extra={"flow": policy.flow, "policy_id": policy_id},
        )
        return flows.FlowRunResult(
            policy_id,
            policy.flow,
            flows.FlowRunStatus.NO_RUNNER,
            f"No runner is registered for flow {policy.flow}; install or enable the app that provides it.",
        )
    outcome = runner(policy)
    return flows.FlowRunResult(policy_id, policy.flow, flows.FlowRunStatus.STARTED, "", outcome)


# --- import ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRowError:
    """One problem of one imported row; row 1 is the first data row under the header."""

    row: int
    field: str
    message: str


@dataclass
class ImportReport:
    """What an import did (or, on a dry run or with errors, would have done): counts and row-numbered errors."""

    resource: str
    dry_run: bool
    total_rows: int = 0
    new: int = 0
    updated: int = 0
    skipped: int = 0
    deleted: int = 0
    errors: list[ImportRowError] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors)

    @property
    def committed(self) -> bool:
        """Whether rows were stored: only a real run without a single error stores anything."""
        return not self.dry_run and not self.errors


IMPORT_FORMATS = ("csv", "xlsx", "json")


def governance_import(
    *, resource_name: str, data: bytes, format: str, user: Any, dry_run: bool, file_name: str = ""
) -> ImportReport:
    """Import a CSV/XLSX/JSON file all-or-nothing: any row error stores nothing and every error is listed."""
    from import_export.formats import base_formats

    from governance.resources import import_resource_get

    resource = import_resource_get(resource_name)()
    formats = {"csv": base_formats.CSV, "xlsx": base_formats.XLSX, "json": base_formats.JSON}
    format_class = formats.get(format.lower().lstrip("."))
    if format_class is None:
        raise HubValidationError(f"Cannot import {format!r} files; use one of {', '.join(IMPORT_FORMATS)}.")
    input_format = format_class()
    try:
        dataset = input_format.create_dataset(data if input_format.is_binary() else data.decode("utf-8-sig"))
    except Exception as exc:  # tablib raises many parser types; all mean "unreadable file"
        raise HubValidationError(
            f"The file could not be read as {format.upper()}: {exc}.", hint="Check the format and the header row."
        ) from exc
    result = resource.import_data(
        dataset,
        dry_run=dry_run,
        raise_errors=False,
        use_transactions=True,
        rollback_on_validation_errors=True,
        user=user,
        file_name=file_name or f"{resource_name}.{format.lower()}",
    )
    totals = result.totals
    report = ImportReport(
        resource=resource_name,
        dry_run=dry_run,
        total_rows=result.total_rows,
        new=totals.get("new", 0),
        updated=totals.get("update", 0),
        skipped=totals.get("skip", 0),
        deleted=totals.get("delete", 0),
    )
    for error in result.base_errors:
        report.errors.append(ImportRowError(0, "", str(error.error)))
    for number, row_errors in result.row_errors():
        report.errors.extend(ImportRowError(number, "", str(error.error)) for error in row_errors)
    for invalid in result.invalid_rows:
        for name, messages in invalid.error_dict.items():
            report.errors.extend(
                ImportRowError(invalid.number, "" if name == NON_FIELD_ERRORS else name, str(message))
                for message in messages
            )
    report.errors.sort(key=lambda error: (error.row, error.field))
    return report
