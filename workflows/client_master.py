"""Client master: CRM accounts become one client in the ERP (a party) and the PSA, with duplicate detection.

A CRM account message (webhook or pull) starts or re-opens the account's run (flow client_master, business key
crm:account:<id>); a worker runs `client_master_run`. Other flows call `client_master_ensure` for the client
they need. Both go through `_client_push`:

1. check_duplicates: only while the client is not yet linked (no cross-reference, not linked or cleared by a
   person). The account's normalised keys (name without case, punctuation and legal suffixes; web domain;
   tax id) are looked up in the client directory (indexed keys: same name block, same domain or same tax
   id), and only that small candidate set is scored with rapidfuzz. The threshold comes from the flow's sync
   policy (validation rule `client_duplicate_check`). A suspect holds the run on a duplicate_suspect item
   that an analyst links, creates as new, or rejects; `DuplicateSuspectHeld` tells the caller.
2. erp_client and psa_client: an idempotent upsert by a per-system key (or an update by id of a record a
   person linked), then the cross-reference canonical id ↔ external id. Every call goes through the transport
   (`workflow_call`). A retryable failure (the system paused or its circuit open, a timeout, a 5xx) leaves the
   step failed and the run running, and raises: the run's task (or the saga that needed the client) tries
   again after the flow's policy delay. A terminal failure holds the run on a target_rejected item.

A duplicate linked to a client the hub already knows becomes an alias of it (`linked_to`): cross-references
are one per system and canonical id, so the alias resolves to the existing client's ids and later updates of
the account go to that record.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rapidfuzz import fuzz

from connectors.choices import SystemRole
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory, ExceptionState
from governance.choices import Flow
from governance.models import LegalEntity
from governance.rules import schema_defaults
from governance.selectors import sync_policy_for
from integrationhub.errors import HubConflictError, HubError, HubValidationError
from sync.models import CrossReference, Message
from workflows.choices import (
    STEP_CHECK_DUPLICATES,
    STEP_ERP_CLIENT,
    STEP_PSA_CLIENT,
    DirectorySource,
    MatchKey,
    RunStatus,
    StepStatus,
)
from workflows.models import ClientDirectoryEntry, ClientDirectorySource, WorkflowRun
from workflows.services import (
    connector_offers,
    workflow_call,
    workflow_run_finish,
    workflow_run_hold,
    workflow_run_lock,
    workflow_run_resume,
    workflow_run_start,
    workflow_step_begin,
    workflow_step_done,
    workflow_step_fail,
)

logger = logging.getLogger(__name__)

CLIENT_ENTITY = "client"
DUPLICATE_RULE = "client_duplicate_check"
DUPLICATE_RULE_PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name_threshold": {
            "type": "number",
            "minimum": 50,
            "maximum": 100,
            "default": 90,
            "description": "Name similarity (0-100, rapidfuzz token sort ratio of the normalised names) at or "
            "above which a known client is a duplicate suspect.",
        },
        "match_domain": {"type": "boolean", "default": True, "description": "The same web domain is a suspect."},
        "match_tax_id": {"type": "boolean", "default": True, "description": "The same tax id is a suspect."},
    },
}
CANDIDATE_LIMIT = 1000
DIRECTORY_PAGES_PER_CHECK = 20
BLOCK_LENGTH = 4
CANDIDATE_FIELDS = (
    "source_key",
    "source",
    "canonical_id",
    "system__slug",
    "external_id",
    "name",
    "name_key",
    "domain",
    "tax_id",
    "linked_to",
)

# Legal-form words dropped from names before comparing ("Contoso Ltd" and "Contoso Limited" are one name).
LEGAL_SUFFIXES = frozenset(
    {
        "ltd",
        "limited",
        "plc",
        "llp",
        "lp",
        "llc",
        "inc",
        "incorporated",
        "corp",
        "corporation",
        "co",
        "company",
        "gmbh",
        "ag",
        "kg",
        "ug",
        "se",
        "sa",
        "sas",
        "sarl",
        "srl",
        "spa",
        "bv",
        "nv",
        "oy",
        "ab",
        "as",
        "pty",
        "pte",
        "kk",
        "the",
        "und",
        "and",
        "mbh",
    }
)
GENERIC_DOMAINS = frozenset({"gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "example.com"})


class DuplicateSuspectHeld(HubConflictError):
    """The client was sent to the exception queue as a possible duplicate of a known client."""

    code = "duplicate_suspect_held"
    title = "The client waits for a duplicate decision"

    def __init__(self, detail: str, *, item_id: int, canonical_id: str) -> None:
        super().__init__(
            detail,
            hint="An analyst links it to the existing client, creates it as new, or rejects it in the exception queue.",
        )
        self.item_id = item_id
        self.canonical_id = canonical_id


class ClientMasterError(HubError):
    """The client could not be written to the ERP or the PSA; the account's run is held with the reason."""

    status = 502
    code = "client_master_failed"
    title = "The client could not be created or updated"


@dataclass(frozen=True)
class ClientMasterResult:
    """The client's ids in the legal entity's ERP and in the PSA."""

    canonical_id: str
    erp_id: str
    psa_id: str
    erp_system: str
    psa_system: str
    run_id: int | None = None


# --- keys ------------------------------------------------------------------------------------------------


def client_name_key(name: str) -> str:
    """The name as compared: no accents, lower case, punctuation as spaces, legal suffixes and "the" dropped."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode().lower()
    # Dots go without a space, so "L.L.P." is "llp" (a legal suffix) and not three letters.
    text = text.replace("&", " and ").replace(".", "")
    tokens = re.sub(r"[^a-z0-9]+", " ", text).split()
    kept = [token for token in tokens if token not in LEGAL_SUFFIXES]
    return " ".join(kept or tokens)


def client_block_key(name_key: str) -> str:
    """The blocking key: the first letters of the normalised name without spaces."""
    return name_key.replace(" ", "")[:BLOCK_LENGTH]


def client_domain(value: str) -> str:
    """The registrable host of a website or e-mail address, without www (empty for free mail providers)."""
    text = (value or "").strip().lower()
    if not text:
        return ""
    if "@" in text and "://" not in text:
        text = text.rsplit("@", 1)[1]
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text).split("/", 1)[0].split(":", 1)[0]
    text = text.removeprefix("www.").strip(".")
    return "" if text in GENERIC_DOMAINS else text


def client_tax_key(value: str) -> str:
    """A tax or company-register id as compared: letters and digits only, upper case."""
    return re.sub(r"[^A-Z0-9]", "", (value or "").upper())


def _canonical_tax_id(canonical: Mapping[str, Any]) -> str:
    tax = canonical.get("tax") if isinstance(canonical.get("tax"), Mapping) else {}
    return str(canonical.get("registration_number") or (tax or {}).get("vat_id") or "")


def _record_keys(name: str, website: str, tax_id: str) -> dict[str, str]:
    name_key = client_name_key(name)
    return {
        "name": (name or "")[:255],
        "name_key": name_key[:255],
        "block_key": client_block_key(name_key),
        "domain": client_domain(website)[:255],
        "tax_id": client_tax_key(tax_id)[:60],
    }


# --- where the client goes -----------------------------------------------------------------------------


def system_for(*, role: str, legal_entity: LegalEntity | None) -> ConnectedSystem | None:
    """The connected system of `role` that serves `legal_entity` (the first by name), paused ones included."""
    systems = ConnectedSystem.objects.filter(role=role)
    if legal_entity is not None:
        systems = systems.filter(legal_entities=legal_entity)
    return systems.order_by("name").first()


def _require_system(role: str, legal_entity: LegalEntity | None) -> ConnectedSystem:
    system = system_for(role=role, legal_entity=legal_entity)
    if system is None:
        code = legal_entity.code if legal_entity else "any legal entity"
        raise HubValidationError(
            f"No {role} system serves {code}.",
            errors=[{"field": "legal_entity", "message": f"No connected {role} system serves {code}."}],
            hint=f"Add {code} to the legal entities of the {role} system under Connectors → Connected systems.",
        )
    return system


def client_legal_entity(*, canonical_client: Mapping[str, Any], message: Message | None = None) -> LegalEntity | None:
    """The legal entity a CRM account belongs to: its contracting entity, the message's, or the only entity whose
    base currency is the account's billing currency."""
    code = canonical_client.get("contracting_legal_entity_code")
    if code:
        return LegalEntity.objects.filter(code=code).first()
    if message is not None and message.legal_entity_id:
        return message.legal_entity
    currency = canonical_client.get("billing_currency")
    if currency:
        matches = list(LegalEntity.objects.filter(base_currency=currency)[:2])
        if len(matches) == 1:
            return matches[0]
    return None


def duplicate_check_params(*, legal_entity: LegalEntity | None) -> dict[str, Any]:
    """The duplicate check's parameters from the client-master sync policy's `client_duplicate_check` entry."""
    params = schema_defaults(DUPLICATE_RULE_PARAMS)
    policy = sync_policy_for(flow=Flow.CLIENT_MASTER, legal_entity=legal_entity)
    for entry in (policy.validation_rules if policy is not None else None) or []:
        if isinstance(entry, Mapping) and entry.get("rule") == DUPLICATE_RULE:
            params.update(entry.get("params") or {})
    return params


def client_idempotency_key(*, system: ConnectedSystem, canonical_id: str) -> str:
    """The key a client is created with in one system; per system, as sandbox ERPs of two entities share a store."""
    return f"client:{system.slug}:{canonical_id}"


def _client_payload(system: ConnectedSystem, canonical: Mapping[str, Any], legal_entity: LegalEntity | None) -> dict:
    name = str(canonical.get("name") or "").strip()
    currency = canonical.get("billing_currency") or (legal_entity.base_currency if legal_entity else None)
    if system.connector_type == "sandbox_erp":
        payload: dict[str, Any] = {"name": name, "external_ref": str(canonical["id"])}
        if legal_entity is not None:
            payload["legal_entity"] = legal_entity.code
        if currency:
            payload["currency"] = currency
        tax_id = _canonical_tax_id(canonical)
        if tax_id:
            payload["tax_id"] = tax_id
        return payload
    if system.connector_type == "harvest_psa":
        payload = {
            "name": name,
            "is_active": canonical.get("status") not in ("inactive", "blocked"),
            "external_reference": str(canonical["id"]),
        }
        if currency:
            payload["currency"] = currency
        return payload
    if system.connector_type == "tryton_erp":
        return {"name": name}
    return {key: value for key, value in canonical.items() if key not in ("external_refs",)}


# --- cross-references ----------------------------------------------------------------------------------


def xref_get(*, system: ConnectedSystem, entity: str, canonical_id: str) -> str | None:
    """The external id of `canonical_id` in `system`, or None."""
    return (
        CrossReference.objects.filter(system=system, entity=entity, canonical_id=canonical_id)
        .values_list("external_id", flat=True)
        .first()
    )


def xref_set(*, system: ConnectedSystem, entity: str, canonical_id: str, external_id: str) -> CrossReference:
    """Record canonical id ↔ external id in `system`; refuses an external id already bound to another record."""
    with transaction.atomic():
        existing = CrossReference.objects.filter(system=system, entity=entity, canonical_id=canonical_id).first()
        if existing is not None:
            if existing.external_id != external_id:
                existing.external_id = external_id
                existing.full_clean()
                existing.save(update_fields=["external_id", "updated_at"])
            return existing
        xref = CrossReference(system=system, entity=entity, canonical_id=canonical_id, external_id=external_id)
        xref.full_clean(validate_unique=False)
        try:
            with transaction.atomic():
                xref.save()
        except IntegrityError:
            other = CrossReference.objects.filter(system=system, entity=entity, external_id=external_id).first()
            raise HubConflictError(
                f"{system.slug} {entity} {external_id} is already cross-referenced to "
                f"{other.canonical_id if other else 'another record'}.",
                hint="Link the record to that client instead of creating a second cross-reference.",
            ) from None
        return xref


# --- the directory -------------------------------------------------------------------------------------


def client_directory_entry_save(
    *, canonical_client: Mapping[str, Any], legal_entity: LegalEntity | None
) -> ClientDirectoryEntry:
    """The hub's directory entry of a canonical client, its keys brought up to date."""
    canonical_id = str(canonical_client["id"])
    keys = _record_keys(
        str(canonical_client.get("name") or ""),
        str(canonical_client.get("website") or ""),
        _canonical_tax_id(canonical_client),
    )
    entry = ClientDirectoryEntry.objects.filter(source_key=f"hub:{canonical_id}").first()
    if entry is None:
        entry = ClientDirectoryEntry(
            source_key=f"hub:{canonical_id}", source=DirectorySource.HUB, canonical_id=canonical_id
        )
    changed = [name for name, value in keys.items() if getattr(entry, name) != value]
    for name in changed:
        setattr(entry, name, keys[name])
    if legal_entity is not None and entry.legal_entity_id is None:
        entry.legal_entity = legal_entity
        changed.append("legal_entity")
    if entry.pk is None or changed:
        entry.full_clean(validate_unique=False)
        try:
            with transaction.atomic():
                entry.save()
        except IntegrityError:
            # Saved at the same time by a concurrent run of the same client.
            entry = ClientDirectoryEntry.objects.get(source_key=f"hub:{canonical_id}")
    return entry


def client_directory_refresh(
    *,
    system: ConnectedSystem,
    run: WorkflowRun,
    max_pages: int = DIRECTORY_PAGES_PER_CHECK,
    correlation_id: str = "",
) -> int:
    """Read the clients changed in `system` since the last read into the directory, for `run`'s duplicate
    check; returns how many.

    Incremental (the connector's change cursor is kept), so a check pays only for what changed since.
    A system whose connector cannot list clients adds nothing.
    """
    if not connector_offers(system, "fetch_changes"):
        return 0
    source, _ = ClientDirectorySource.objects.get_or_create(system=system)
    company = str(system.settings.get("company_code") or "")
    count = 0
    cursor: str | None = source.cursor or None
    for _page in range(max_pages):
        batch = workflow_call(
            run,
            system,
            "fetch_changes",
            methodcaller("fetch_changes", CLIENT_ENTITY, cursor),
            step=STEP_CHECK_DUPLICATES,
            entity=CLIENT_ENTITY,
            correlation_id=correlation_id,
        )
        for record in batch.records:
            if company and record.get("legal_entity") and record.get("legal_entity") != company:
                continue  # a sandbox ERP store shared by entities lists the other entity's clients too
            external_id = str(record.get("id") or "")
            if not external_id or not record.get("name"):
                continue
            source_key = f"{system.slug}:{external_id}"[:260]
            if record.get("deleted") or record.get("IsDeleted"):
                ClientDirectoryEntry.objects.filter(source_key=source_key).delete()
                continue
            keys = _record_keys(str(record["name"]), str(record.get("website") or ""), str(record.get("tax_id") or ""))
            ClientDirectoryEntry.objects.update_or_create(
                source_key=source_key,
                defaults={**keys, "source": DirectorySource.SYSTEM, "system": system, "external_id": external_id},
            )
            count += 1
        cursor = batch.next_cursor or cursor
        if not batch.has_more:
            break
    source.cursor = cursor or ""
    source.refreshed_at = timezone.now()
    source.save(update_fields=["cursor", "refreshed_at"])
    return count


def client_duplicate_candidates(
    *, entry: ClientDirectoryEntry, params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Known clients that `entry` may duplicate, best first: [{candidate, canonical_id, system, external_id,
    name, score, matched}]. Only the blocked set (same name block, domain or tax id) is read and scored."""
    params = {**schema_defaults(DUPLICATE_RULE_PARAMS), **(params or {})}
    threshold = float(params["name_threshold"])
    blocks = Q(block_key=entry.block_key) if entry.block_key else Q(pk__in=[])
    if params["match_domain"] and entry.domain:
        blocks |= Q(domain=entry.domain)
    if params["match_tax_id"] and entry.tax_id:
        blocks |= Q(tax_id=entry.tax_id)
    own = entry.canonical_id
    rows = list(
        ClientDirectoryEntry.objects.filter(blocks)
        .exclude(pk=entry.pk)
        .exclude(linked_to=own)
        .select_related("system")
        .only(*CANDIDATE_FIELDS)
        .order_by("id")[:CANDIDATE_LIMIT]
    )
    # A listed ERP/PSA record the hub cross-referenced is the hub's client: compare it as that client.
    listed = [row for row in rows if row.source == DirectorySource.SYSTEM]
    owners: dict[tuple[int | None, str], str] = {
        (system_id, external_id): canonical_id
        for system_id, external_id, canonical_id in CrossReference.objects.filter(
            entity=CLIENT_ENTITY,
            system_id__in={row.system_id for row in listed},
            external_id__in={row.external_id for row in listed},
        ).values_list("system_id", "external_id", "canonical_id")
    }
    aliases = dict(
        ClientDirectoryEntry.objects.filter(source=DirectorySource.HUB, canonical_id__in=set(owners.values()))
        .exclude(linked_to="")
        .values_list("canonical_id", "linked_to")
    )
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        canonical_id = row.linked_to or row.canonical_id or owners.get((row.system_id, row.external_id), "")
        canonical_id = aliases.get(canonical_id, canonical_id)
        if own and canonical_id == own:
            continue
        score = round(float(fuzz.token_sort_ratio(entry.name_key, row.name_key)), 1)
        matched = []
        if entry.name_key and score >= threshold:
            matched.append(MatchKey.NAME.value)
        if params["match_domain"] and entry.domain and row.domain == entry.domain:
            matched.append(MatchKey.DOMAIN.value)
        if params["match_tax_id"] and entry.tax_id and row.tax_id == entry.tax_id:
            matched.append(MatchKey.TAX_ID.value)
        if not matched:
            continue
        identity = f"hub:{canonical_id}" if canonical_id else row.source_key
        candidate = {
            "candidate": identity,
            "canonical_id": canonical_id,
            "system": row.system.slug if row.system else "",
            "external_id": row.external_id,
            "name": row.name,
            "score": score,
            "matched": matched,
            # What a person compares side by side on the item: the keys, and how each one scored.
            "domain": row.domain,
            "tax_id": row.tax_id,
            "scores": {
                MatchKey.NAME.value: score,
                MatchKey.DOMAIN.value: 100.0 if entry.domain and row.domain == entry.domain else 0.0,
                MatchKey.TAX_ID.value: 100.0 if entry.tax_id and row.tax_id == entry.tax_id else 0.0,
            },
        }
        kept = best.get(identity)
        if kept is None or (len(matched), score) > (len(kept["matched"]), kept["score"]):
            best[identity] = candidate
    ranked = sorted(best.values(), key=lambda c: (-len(c["matched"]), -c["score"], c["candidate"]))
    _candidate_ids_add(ranked)
    return ranked


def _candidate_ids_add(candidates: list[dict[str, Any]]) -> None:
    """Each candidate's record id in every system (the hub's cross-references, or the listing system's own id),
    so the item shows the ERP and PSA ids side by side."""
    canonical_ids = {c["canonical_id"] for c in candidates if c["canonical_id"]}
    ids: dict[str, dict[str, str]] = {}
    for canonical_id, slug, external_id in CrossReference.objects.filter(
        entity=CLIENT_ENTITY, canonical_id__in=canonical_ids
    ).values_list("canonical_id", "system__slug", "external_id"):
        ids.setdefault(canonical_id, {})[slug] = external_id
    for candidate in candidates:
        found = dict(ids.get(candidate["canonical_id"], {}))
        if candidate["system"] and candidate["external_id"]:
            found.setdefault(candidate["system"], candidate["external_id"])
        candidate["ids"] = dict(sorted(found.items()))


# --- the flow ------------------------------------------------------------------------------------------


def _business_key(canonical_id: str) -> str:
    return f"crm:account:{canonical_id}"


def client_master_run_get_or_start(
    *,
    canonical_client: Mapping[str, Any],
    legal_entity: LegalEntity | None,
    message: Message | None = None,
    correlation_id: str = "",
) -> tuple[WorkflowRun, bool]:
    """The account's client-master run, started on its first message; the latest canonical record is kept in
    its context."""
    canonical_id = str(canonical_client["id"])
    run, created = workflow_run_start(
        flow=Flow.CLIENT_MASTER,
        business_key=_business_key(canonical_id),
        legal_entity=legal_entity,
        message=message,
        correlation_id=correlation_id,
        context={"client": dict(canonical_client)},
    )
    if not created:
        run.context = {**(run.context or {}), "client": dict(canonical_client)}
        fields = ["context", "updated_at"]
        if message is not None and run.message_id != message.pk:
            run.message = message
            fields.append("message")
        if legal_entity is not None and run.legal_entity_id is None:
            run.legal_entity = legal_entity
            fields.append("legal_entity")
        run.save(update_fields=fields)
    return run, created


def _linked(entry: ClientDirectoryEntry, systems: list[ConnectedSystem]) -> bool:
    if entry.linked_to or entry.duplicate_cleared:
        return True
    return CrossReference.objects.filter(
        system__in=systems, entity=CLIENT_ENTITY, canonical_id=entry.canonical_id
    ).exists()


def _check_duplicates(
    run: WorkflowRun,
    entry: ClientDirectoryEntry,
    canonical: Mapping[str, Any],
    systems: list[ConnectedSystem],
    correlation_id: str,
) -> None:
    step = workflow_step_begin(run=run, name=STEP_CHECK_DUPLICATES, position=1)
    if _linked(entry, systems):
        workflow_step_done(
            step=step, result={"duplicate_check": "not needed: the client is linked"}, status=StepStatus.SKIPPED
        )
        return
    for system in systems:
        try:
            client_directory_refresh(system=system, run=run, correlation_id=correlation_id)
        except ConnectorError as exc:
            # The check still runs on what the directory holds; the write below meets the outage anyway.
            logger.warning("client directory refresh failed", extra={"system": system.slug, "error": str(exc)})
    params = duplicate_check_params(legal_entity=run.legal_entity)
    candidates = client_duplicate_candidates(entry=entry, params=params)
    if not candidates:
        workflow_step_done(step=step, result={"duplicate_candidates": 0})
        return
    names = "; ".join(f"{c['name']} ({', '.join(c['matched'])}, score {c['score']})" for c in candidates[:3])
    reason = f"CRM account {entry.canonical_id} ({entry.name}) may duplicate: {names}."
    workflow_step_fail(step=step, error=reason)
    item = workflow_run_hold(
        run=run,
        category=ExceptionCategory.DUPLICATE_SUSPECT,
        reason=reason,
        step=STEP_CHECK_DUPLICATES,
        external_id=entry.canonical_id,
        payload_snapshot=dict(canonical),
        failed_rules=[
            {
                "rule": DUPLICATE_RULE,
                "field": "name" if MatchKey.NAME in c["matched"] else c["matched"][0],
                "expected": "no known client with the same keys",
                "actual": c["name"],
                "message": f"Matches {c['name']} on {', '.join(c['matched'])} (name score {c['score']}).",
                **c,
                "suspect": {
                    "id": entry.canonical_id,
                    "name": entry.name,
                    "domain": entry.domain,
                    "tax_id": entry.tax_id,
                },
            }
            for c in candidates
        ],
        suggested_action="Link the account to the existing client, create it as a new client, or reject it.",
    )
    raise DuplicateSuspectHeld(reason, item_id=item.pk, canonical_id=entry.canonical_id)


def _write_client(
    run: WorkflowRun,
    step: str,
    system: ConnectedSystem,
    canonical: Mapping[str, Any],
    effective_id: str,
    legal_entity: LegalEntity | None,
    update: bool,
    correlation_id: str,
) -> str:
    # A linked duplicate writes under the client it was linked to: that record's reference stays its own.
    payload = _client_payload(system, {**canonical, "id": effective_id}, legal_entity)
    key = client_idempotency_key(system=system, canonical_id=effective_id)
    existing = xref_get(system=system, entity=CLIENT_ENTITY, canonical_id=effective_id)

    def upsert() -> str:
        result = workflow_call(
            run,
            system,
            "upsert",
            methodcaller("upsert", CLIENT_ENTITY, payload, key),
            step=step,
            entity=CLIENT_ENTITY,
            key=key,
            correlation_id=correlation_id,
        )
        return str(result.external_id)

    if existing is not None:
        if update and connector_offers(system, "update_record"):
            workflow_call(
                run,
                system,
                "update_record",
                methodcaller("update_record", CLIENT_ENTITY, existing, payload),
                step=step,
                entity=CLIENT_ENTITY,
                key=key,
                correlation_id=correlation_id,
            )
        elif update:
            upsert()
        return existing
    external_id = upsert()
    xref_set(system=system, entity=CLIENT_ENTITY, canonical_id=effective_id, external_id=external_id)
    return external_id


def _client_push(
    *,
    run: WorkflowRun,
    canonical: Mapping[str, Any],
    legal_entity: LegalEntity | None,
    update: bool,
    correlation_id: str = "",
) -> ClientMasterResult:
    canonical_id = str(canonical["id"])
    erp = _require_system(SystemRole.ERP, legal_entity)
    psa = _require_system(SystemRole.PSA, legal_entity)
    entry = client_directory_entry_save(canonical_client=canonical, legal_entity=legal_entity)
    effective_id = entry.linked_to or canonical_id
    if not update and (
        xref_get(system=erp, entity=CLIENT_ENTITY, canonical_id=effective_id) is not None
        and xref_get(system=psa, entity=CLIENT_ENTITY, canonical_id=effective_id) is not None
        and run.status == RunStatus.COMPLETED
    ):
        return ClientMasterResult(
            canonical_id=effective_id,
            erp_id=str(xref_get(system=erp, entity=CLIENT_ENTITY, canonical_id=effective_id)),
            psa_id=str(xref_get(system=psa, entity=CLIENT_ENTITY, canonical_id=effective_id)),
            erp_system=erp.slug,
            psa_system=psa.slug,
            run_id=run.pk,
        )
    if run.status != RunStatus.RUNNING:
        workflow_run_resume(run=run)
    _check_duplicates(run, entry, canonical, [erp, psa], correlation_id)
    ids: dict[str, str] = {}
    for position, (step_name, system) in enumerate(((STEP_ERP_CLIENT, erp), (STEP_PSA_CLIENT, psa)), start=2):
        step = workflow_step_begin(run=run, name=step_name, position=position)
        try:
            ids[step_name] = _write_client(
                run, step_name, system, canonical, effective_id, legal_entity, update, correlation_id
            )
            workflow_step_done(
                step=step, result={f"{step_name}_id": ids[step_name], f"{step_name}_system": system.slug}
            )
            continue
        except (ConnectorError, HubConflictError) as exc:
            error = f"{system.slug}: {exc.detail}"
            if isinstance(exc, ConnectorError) and exc.retryable:
                # Paused, circuit open, a timeout or a 5xx: the step is tried again after the policy's delay.
                workflow_step_fail(step=step, error=error)
                raise
        workflow_step_fail(step=step, error=error)
        workflow_run_hold(
            run=run,
            category=ExceptionCategory.TARGET_REJECTED,
            reason=f"The client {canonical.get('name')} could not be written to {system.slug}: {error}",
            step=step_name,
            system=system,
            external_id=canonical_id,
            payload_snapshot=dict(canonical),
            suggested_action="Fix the cause (credentials, the record, the system), then replay the account message.",
        )
        raise ClientMasterError(error, hint="The client-master run is held in the exception queue with this error.")
    workflow_run_finish(run=run)
    return ClientMasterResult(
        canonical_id=effective_id,
        erp_id=ids[STEP_ERP_CLIENT],
        psa_id=ids[STEP_PSA_CLIENT],
        erp_system=erp.slug,
        psa_system=psa.slug,
        run_id=run.pk,
    )


def client_master_ensure(
    *,
    canonical_client: Mapping[str, Any],
    legal_entity: LegalEntity | None,
    correlation_id: str = "",
    message: Message | None = None,
) -> ClientMasterResult:
    """The client's ERP and PSA ids for other flows: created (or linked) when missing, read from the
    cross-references otherwise. Raises DuplicateSuspectHeld while the client waits for a duplicate decision."""
    if not canonical_client.get("id") or not canonical_client.get("name"):
        raise HubValidationError(
            "A client needs an id and a name.",
            errors=[
                {"field": name, "message": "This field is required."}
                for name in ("id", "name")
                if not canonical_client.get(name)
            ],
        )
    run, _ = client_master_run_get_or_start(
        canonical_client=canonical_client, legal_entity=legal_entity, message=message, correlation_id=correlation_id
    )
    if run.status == RunStatus.HELD:
        item = run.exception_items.filter(
            category=ExceptionCategory.DUPLICATE_SUSPECT, state=ExceptionState.OPEN
        ).first()
        if item is not None:
            raise DuplicateSuspectHeld(
                run.last_error or "The client waits for a duplicate decision.",
                item_id=item.pk,
                canonical_id=str(canonical_client["id"]),
            )
    if run.status == RunStatus.REJECTED:
        raise ClientMasterError(
            f"The client {canonical_client.get('name')} was rejected in the duplicate check.",
            hint="Correct the account in the CRM; a new account starts a new check.",
        )
    return _client_push(
        run=run, canonical=canonical_client, legal_entity=legal_entity, update=False, correlation_id=correlation_id
    )


def client_master_give_up(*, run_id: int, error: ConnectorError) -> WorkflowRun | None:
    """A system kept failing retryably until the policy's attempts were spent: hold the run at its failed step
    on a dead-letter item, for a person to replay the account message once the system is back."""
    with workflow_run_lock(run_id=run_id) as acquired:
        run = WorkflowRun.objects.filter(pk=run_id, flow=Flow.CLIENT_MASTER).select_related("legal_entity").first()
        if not acquired or run is None or run.status != RunStatus.RUNNING:
            return run
        step = run.steps.filter(status=StepStatus.FAILED).order_by("-position").first()
        name = step.name if step is not None else run.current_step
        role = {STEP_ERP_CLIENT: SystemRole.ERP, STEP_PSA_CLIENT: SystemRole.PSA}.get(name)
        canonical = (run.context or {}).get("client") or {}
        workflow_run_hold(
            run=run,
            category=ExceptionCategory.DEAD_LETTER,
            reason=f"Gave up writing the client {canonical.get('name')} after repeated failures: {error.detail}"[:4000],
            step=name,
            system=system_for(role=role, legal_entity=run.legal_entity) if role else None,
            external_id=str(canonical.get("id") or ""),
            payload_snapshot=dict(canonical),
            suggested_action="Check the system named in the error (paused, down, credentials), then replay the "
            "account message.",
        )
        return run


class RunBusyError(HubConflictError):
    """Another worker is carrying the same run out; try again shortly (its latest record is then read)."""

    code = "workflow_run_busy"


def client_master_run(*, run_id: int) -> ClientMasterResult | None:
    """Carry an account's run out with its latest record (create, or update the linked records); None when the
    run is not running (held, rejected, or already done). RunBusyError while another worker has it."""
    with workflow_run_lock(run_id=run_id) as acquired:
        if not acquired:
            raise RunBusyError(f"Workflow run {run_id} is being carried out by another worker.")
        return _client_master_run(run_id)


def _client_master_run(run_id: int) -> ClientMasterResult | None:
    run = (
        WorkflowRun.objects.select_related("legal_entity", "message").filter(pk=run_id, flow=Flow.CLIENT_MASTER).first()
    )
    if run is None or run.status != RunStatus.RUNNING:
        return None
    canonical = (run.context or {}).get("client") or {}
    try:
        result = _client_push(run=run, canonical=canonical, legal_entity=run.legal_entity, update=True)
    except (DuplicateSuspectHeld, ClientMasterError, HubValidationError) as exc:
        if isinstance(exc, HubValidationError) and run.status == RunStatus.RUNNING:
            workflow_run_hold(
                run=run,
                category=ExceptionCategory.VALIDATION,
                reason=exc.detail,
                step=run.current_step or STEP_CHECK_DUPLICATES,
                external_id=str(canonical.get("id") or ""),
                payload_snapshot=canonical,
                suggested_action=exc.hint,
            )
        return None
    from workflows.opportunity_to_project import opportunity_runs_resume_for_client

    opportunity_runs_resume_for_client(canonical_id=str(canonical["id"]))
    return result


def client_master_start_from_message(*, message: Message) -> WorkflowRun | None:
    """Start (or re-open, for a later update) the run of the CRM account in `message`; the worker runs it."""
    from integrationhub.dispatch import enqueue_on_commit
    from workflows.tasks import client_master_run_task

    canonical = message.canonical_payload or {}
    if not canonical.get("id"):
        return None
    legal_entity = client_legal_entity(canonical_client=canonical, message=message)
    if legal_entity is None:
        # Without a legal entity the account has no ERP to go to; it is created when an opportunity needs it.
        logger.info("client master: account without a legal entity", extra={"message_id": message.pk})
        return None
    run, _ = client_master_run_get_or_start(
        canonical_client=canonical, legal_entity=legal_entity, message=message, correlation_id=message.correlation_id
    )
    waiting = run.status == RunStatus.HELD and run.exception_items.filter(state=ExceptionState.OPEN).exists()
    if waiting or run.status in (RunStatus.REJECTED, RunStatus.CANCELLED):
        return run  # waits for a person; the latest record is in its context for when it resumes
    # A held run whose item was replayed (a failed ERP or PSA write) carries on with this message.
    if run.status != RunStatus.RUNNING:
        workflow_run_resume(run=run)
    enqueue_on_commit(client_master_run_task, run.pk, queue="delivery")
    return run
