"""API key services: create (the secret is returned once), revoke, and verify a presented key."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from integrationhub.audit import AuditAction, audit_record
from integrationhub.errors import HubError, HubValidationError
from integrationhub.models import ApiKey
from integrationhub.scopes import validate_scopes

# Recording every use would write a row per request; a minute's precision is enough to spot unused keys.
LAST_USED_PRECISION = datetime.timedelta(minutes=1)


class ApiKeyRefused(HubError):
    status = 401
    code = "api_key_refused"
    title = "The API key was refused"


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    key: str  # the only time the full key exists outside the client: show it once, never store it


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> tuple[str, str]:
    prefix = secrets.token_hex(4)  # 8 characters, shown in lists so a person can tell keys apart
    return prefix, f"{prefix}.{secrets.token_urlsafe(32)}"


@transaction.atomic
def api_key_create(
    *,
    name: str,
    owner: Any,
    scopes: list[str],
    created_by: Any = None,
    legal_entity: Any = None,
    all_entities: bool = False,
    expires_at: datetime.datetime | None = None,
    request: Any = None,
) -> CreatedApiKey:
    """Create a key acting as `owner` within `scopes`; returns the key in clear this once.

    Its reach over operational data: `legal_entity` (one entity of the owner's), or `all_entities` (every entity
    the owner has; only an integration admin may grant it, and it is audited), else no entity at all."""
    from integrationhub.scoping import can_grant_all_entities

    try:
        scopes = validate_scopes(list(scopes))
    except ValueError as error:
        raise HubValidationError(str(error), errors=[{"field": "scopes", "message": str(error)}]) from None
    if not scopes:
        raise HubValidationError(
            "Give the key at least one scope.", errors=[{"field": "scopes", "message": "At least one scope."}]
        )
    if all_entities and legal_entity is not None:
        raise HubValidationError(
            "Give the key either one legal entity or all entities, not both.",
            errors=[{"field": "all_entities", "message": "Not with a legal entity."}],
        )
    # created_by None: a server-side call (shell, migration), trusted like the operator who runs it.
    if all_entities and created_by is not None and not can_grant_all_entities(created_by):
        raise HubValidationError(
            "Only an integration admin may give a key all legal entities.",
            errors=[{"field": "all_entities", "message": "Only an integration admin may grant it."}],
            hint="Restrict the key to one legal entity, or ask an integration admin to create it.",
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise HubValidationError(
            "The expiry must be in the future.", errors=[{"field": "expires_at", "message": "Must be in the future."}]
        )
    for _attempt in range(5):
        prefix, key = _new_key()
        api_key = ApiKey(
            name=name,
            prefix=prefix,
            hashed_key=api_key_hash(key),
            scopes=scopes,
            owner=owner,
            created_by=created_by,
            legal_entity=legal_entity,
            all_entities=all_entities,
            expires_at=expires_at,
        )
        api_key.full_clean()
        try:
            with transaction.atomic():
                api_key.save()
            break
        except IntegrityError:  # a prefix collision: 1 in 4 billion, try another
            continue
    else:  # pragma: no cover
        raise HubError("Could not create a unique API key; try again.")
    audit_record(
        action=AuditAction.API_KEY_CREATED,
        actor=created_by,
        request=request,
        object_type="integrationhub.apikey",
        object_id=api_key.pk,
        summary=f"API key '{name}' ({prefix}…) created for '{owner.get_username()}' with {', '.join(scopes)}",
        details={
            "owner": owner.get_username(),
            "scopes": scopes,
            "legal_entity": getattr(legal_entity, "code", None),
            "all_entities": all_entities,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    if all_entities:
        audit_record(
            action=AuditAction.ALL_ENTITIES_GRANTED,
            actor=created_by,
            request=request,
            object_type="integrationhub.apikey",
            object_id=api_key.pk,
            summary=f"All legal entities granted to API key '{name}' ({prefix}…) of '{owner.get_username()}'",
            details={"owner": owner.get_username(), "field": "all_entities", "from": False, "to": True},
        )
    return CreatedApiKey(api_key=api_key, key=key)


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, user: Any = None, request: Any = None) -> ApiKey:
    """Revoke a key now; revoking a revoked key changes nothing."""
    api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if api_key.revoked_at is not None:
        return api_key
    api_key.revoked_at = timezone.now()
    api_key.revoked_by = user if getattr(user, "is_authenticated", False) else None
    api_key.save(update_fields=["revoked_at", "revoked_by"])
    audit_record(
        action=AuditAction.API_KEY_REVOKED,
        actor=user,
        request=request,
        object_type="integrationhub.apikey",
        object_id=api_key.pk,
        summary=f"API key '{api_key.name}' ({api_key.prefix}…) revoked",
    )
    return api_key


def api_key_verify(*, key: str) -> ApiKey:
    """The active key matching `key`; ApiKeyRefused saying why not (unknown, revoked, expired, owner inactive)."""
    key = key.strip()
    prefix = key.split(".", 1)[0][:8]
    api_key = ApiKey.objects.select_related("owner", "legal_entity").filter(prefix=prefix).first()
    if api_key is None or not hmac.compare_digest(api_key.hashed_key, api_key_hash(key)):
        raise ApiKeyRefused(
            "The API key is not valid.", hint="Check the key; a lost key cannot be shown again: create a new one."
        )
    now = timezone.now()
    if api_key.revoked_at is not None:
        raise ApiKeyRefused(
            f"The API key {api_key.prefix}… was revoked on {api_key.revoked_at:%Y-%m-%d %H:%M} UTC.",
            hint="Ask an integration admin for a new key.",
        )
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise ApiKeyRefused(
            f"The API key {api_key.prefix}… expired on {api_key.expires_at:%Y-%m-%d %H:%M} UTC.",
            hint="Ask an integration admin for a new key.",
        )
    if not api_key.owner.is_active:
        raise ApiKeyRefused(
            f"The owner of API key {api_key.prefix}… is deactivated.", hint="Ask an integration admin for a new key."
        )
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_PRECISION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
