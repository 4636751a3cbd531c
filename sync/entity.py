"""Which legal entity a piece of work belongs to when its mapping did not say (it failed, or the mapping has no
legal-entity field): from the record's own entity code, else from the project or contract it references, else
from its source system when that system serves exactly one entity.

A record whose entity is unknown is visible only to users with every legal entity, so a failed PSA entry must
still land in its entity's queue: its project tells which one. The project's entity comes from the work the hub
already did for that project (an earlier message of the same source about the same project, or the project's
own message through its cross-reference), never from a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import Q

from governance.models import LegalEntity
from sync.models import CrossReference, Message

# Raw-payload keys (compared without case, "_" or "-") that carry a legal entity's code.
ENTITY_CODE_KEYS = frozenset({"legalentitycode", "legalentity", "contractinglegalentitycode", "entitycode"})
# Raw-payload keys that name the project or contract a record belongs to, and the canonical entity they name.
REFERENCE_KEYS: dict[str, str] = {
    "projectid": "project",
    "project": "project",
    "contractid": "contract",
    "contract": "contract",
}


def _normalised(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _scalar(value: Any) -> Any:
    if isinstance(value, Mapping):
        value = value.get("id") or value.get("code")
    return value if isinstance(value, str | int) and not isinstance(value, bool) and value != "" else None


def _entity_by_code(payload: Mapping[str, Any]) -> int | None:
    for key, value in payload.items():
        if _normalised(str(key)) in ENTITY_CODE_KEYS and isinstance(value, str) and value:
            found = LegalEntity.objects.filter(code=value).values_list("pk", flat=True).first()
            if found is not None:
                return int(found)
    return None


def _entity_by_reference(payload: Mapping[str, Any], *, system_id: int | None, entity: str) -> int | None:
    for key, raw in payload.items():
        canonical_entity = REFERENCE_KEYS.get(_normalised(str(key)))
        value = _scalar(raw)
        if canonical_entity is None or value is None:
            continue
        known = Message.objects.filter(legal_entity__isnull=False)
        # An earlier record of the same source about the same project (it mapped, so its entity is known).
        if system_id is not None:
            found = (
                known.filter(system_id=system_id, entity=entity, **{f"raw_payload__{key}": raw})
                .order_by("-id")
                .values_list("legal_entity_id", flat=True)
                .first()
            )
            if found is not None:
                return int(found)
        # The project's (or contract's) own message, through the source's cross-reference to its canonical id.
        xrefs = CrossReference.objects.filter(entity=canonical_entity, external_id=str(value))
        if system_id is not None:
            xrefs = xrefs.filter(system_id=system_id)
        canonical_ids = list(xrefs.values_list("canonical_id", flat=True)[:5])
        if canonical_ids:
            found = (
                known.filter(Q(entity=canonical_entity, canonical_id__in=canonical_ids))
                .order_by("-id")
                .values_list("legal_entity_id", flat=True)
                .first()
            )
            if found is not None:
                return int(found)
    return None


def _entity_of_system(system_id: int | None) -> int | None:
    if system_id is None:
        return None
    ids = list(LegalEntity.objects.filter(systems__id=system_id).values_list("pk", flat=True)[:2])
    return int(ids[0]) if len(ids) == 1 else None


def legal_entity_infer(*, payload: Any, system_id: int | None, entity: str = "") -> int | None:
    """The legal entity of a record that did not map: its own entity code, the entity of the project or contract
    it references, or its source system's only entity; None when none of them tells."""
    if isinstance(payload, Mapping):
        found = _entity_by_code(payload) or _entity_by_reference(payload, system_id=system_id, entity=entity)
        if found is not None:
            return found
    return _entity_of_system(system_id)


def message_legal_entity_infer(message: Message) -> int | None:
    """`legal_entity_infer` for a message: its raw payload, source system and entity."""
    return legal_entity_infer(payload=message.raw_payload, system_id=message.system_id, entity=message.entity)


def exception_items_entity_fill(items: Iterable[Any]) -> None:
    """Give each item without a legal entity the one of its message (inferred when the message has none, and then
    recorded on the message too), else of its payload and system. Registered with the exception queue."""
    pending = [item for item in items if item.legal_entity_id is None]
    message_ids = {item.message_id for item in pending if item.message_id is not None}
    messages = {message.pk: message for message in Message.objects.filter(pk__in=message_ids)}
    for item in pending:
        message = messages.get(item.message_id) if item.message_id is not None else None
        entity_id = None
        if message is not None:
            entity_id = message.legal_entity_id or message_legal_entity_infer(message)
            if entity_id is not None and message.legal_entity_id is None:
                Message.objects.filter(pk=message.pk, legal_entity__isnull=True).update(legal_entity_id=entity_id)
                message.legal_entity_id = entity_id
        if entity_id is None:
            entity_id = legal_entity_infer(
                payload=item.payload_snapshot,
                system_id=item.system_id or (message.system_id if message is not None else None),
                entity=message.entity if message is not None else "",
            )
        if entity_id is not None:
            item.legal_entity_id = entity_id
