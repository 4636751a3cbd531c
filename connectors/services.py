"""Writes of the connectors app: connected systems, their secrets, their state and connection tests."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import jsonschema
from cryptography.fernet import InvalidToken
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction
from django.db.models import Value
from django.utils import timezone

from connectors.base import HealthResult
from connectors.choices import SystemState
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import registry
from integrationhub.crypto import EncryptedJSONField, EncryptedTextField, rotate_token
from integrationhub.errors import HubError, HubValidationError

logger = logging.getLogger(__name__)

# Fields connected_system_update may change; secrets go through connected_system_set_secrets only.
UPDATABLE_FIELDS = (
    "name",
    "slug",
    "role",
    "connector_type",
    "base_url",
    "settings",
    "rate_limit_per_second",
    "max_concurrency",
    "inbound_rate",
)


def _json_path(prefix: str, parts: Iterable[Any]) -> str:
    path = prefix
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def connected_system_settings_validate(*, connector_type: str, settings: Any) -> None:
    """Check settings against the connector's parameter schema; errors name the field path (settings.a.b)."""
    connector = registry.get(connector_type)
    if not isinstance(settings, dict):
        raise HubValidationError(
            "Settings must be a JSON object.", errors=[{"field": "settings", "message": "Must be a JSON object."}]
        )
    misplaced = sorted(set(settings) & set(connector.sensitive_parameters))
    if misplaced:
        names = ", ".join(misplaced)
        raise HubValidationError(
            f"settings.{misplaced[0]} is a secret: put {names} in the credentials, not in the settings.",
            errors=[
                {
                    "field": f"settings.{key}",
                    "message": "Secret parameter: put it in the credentials, which are "
                    "encrypted and never shown again.",
                }
                for key in misplaced
            ],
            hint="Move these keys into the system's credentials.",
        )
    validator = jsonschema.Draft202012Validator(
        connector.parameter_schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(settings), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        flat = [{"field": _json_path("settings", e.absolute_path), "message": e.message} for e in errors]
        raise HubValidationError(
            "; ".join(f"{item['field']}: {item['message']}" for item in flat),
            errors=flat,
            hint=f"See GET /api/v1/connector-types/{connector_type}/ for the parameters this connector accepts.",
        )


def connected_system_credentials_validate(*, connector_type: str, credentials: Any) -> None:
    """Credentials are a JSON object whose keys are the connector's sensitive parameters."""
    connector = registry.get(connector_type)
    if not isinstance(credentials, dict):
        raise HubValidationError(
            "Credentials must be a JSON object.",
            errors=[{"field": "credentials", "message": "Must be a JSON object."}],
        )
    unknown = sorted(set(credentials) - set(connector.sensitive_parameters))
    if unknown:
        allowed = ", ".join(sorted(connector.sensitive_parameters)) or "none"
        raise HubValidationError(
            f"credentials.{unknown[0]} is not a parameter of connector '{connector_type}' (accepted: {allowed}).",
            errors=[
                {"field": f"credentials.{key}", "message": f"Unknown credential; accepted: {allowed}."}
                for key in unknown
            ],
        )


def _save(system: ConnectedSystem, *, user: Any, reason: str, update_fields: list[str] | None = None) -> None:
    system._history_user = user  # type: ignore[attr-defined]
    system._change_reason = reason[:100]  # type: ignore[attr-defined]
    system.save(update_fields=update_fields)


def _apply_secrets(
    system: ConnectedSystem,
    *,
    credentials: dict[str, Any] | None,
    webhook_secret: str | None,
    clear_credentials: bool,
    clear_webhook_secret: bool,
) -> list[str]:
    changed: list[str] = []
    if clear_credentials and system.credentials:
        system.credentials = {}  # type: ignore[assignment]
        changed.append("credentials")
    elif credentials is not None:
        connected_system_credentials_validate(connector_type=system.connector_type, credentials=credentials)
        system.credentials = credentials  # type: ignore[assignment]
        changed.append("credentials")
    if clear_webhook_secret and system.webhook_secret:
        system.webhook_secret = ""
        changed.append("webhook_secret")
    elif webhook_secret is not None:
        system.webhook_secret = webhook_secret
        changed.append("webhook_secret")
    if changed:
        system.credentials_updated_at = timezone.now()
    return changed


def _log_secrets_changed(system: ConnectedSystem, changed: list[str], user: Any) -> None:
    # Names what changed and who changed it; never a value. The audit trail keeps the same facts.
    from integrationhub.audit import credentials_changed

    logger.info(
        "credentials changed",
        extra={"system": system.slug, "fields": changed, "user": getattr(user, "username", None)},
    )
    credentials_changed(system=system, changed=changed, user=user)


@transaction.atomic
def connected_system_create(
    *,
    name: str,
    slug: str,
    role: str,
    connector_type: str,
    base_url: str,
    settings: dict[str, Any] | None = None,
    legal_entities: Iterable[Any] = (),
    rate_limit_per_second: Decimal | None = None,
    max_concurrency: int | None = None,
    inbound_rate: str = "",
    credentials: dict[str, Any] | None = None,
    webhook_secret: str | None = None,
    user: Any = None,
    reason: str = "created",
) -> ConnectedSystem:
    """Register a connected system after validating its connector type, settings and credentials."""
    settings = settings or {}
    connected_system_settings_validate(connector_type=connector_type, settings=settings)
    system = ConnectedSystem(
        name=name,
        slug=slug,
        role=role,
        connector_type=connector_type,
        base_url=base_url,
        settings=settings,
        inbound_rate=inbound_rate,
    )
    if rate_limit_per_second is not None:
        system.rate_limit_per_second = rate_limit_per_second
    if max_concurrency is not None:
        system.max_concurrency = max_concurrency
    changed = _apply_secrets(
        system,
        credentials=credentials or None,
        webhook_secret=webhook_secret or None,
        clear_credentials=False,
        clear_webhook_secret=False,
    )
    system.full_clean()
    _save(system, user=user, reason=reason)
    entities = list(legal_entities)
    if entities:
        system.legal_entities.set(entities)
    logger.info("connected system created", extra={"system": system.slug, "connector_type": connector_type})
    if changed:
        _log_secrets_changed(system, changed, user)
    return system


@transaction.atomic
def connected_system_update(
    *, system: ConnectedSystem, data: dict[str, Any], user: Any = None, reason: str = "changed"
) -> ConnectedSystem:
    """Change a system's configuration (not its secrets); settings are re-validated against the connector."""
    unknown = sorted(set(data) - set(UPDATABLE_FIELDS) - {"legal_entities"})
    if unknown:
        raise HubValidationError(
            f"These fields cannot be changed here: {', '.join(unknown)}.",
            errors=[
                {"field": key, "message": "Not updatable; secrets use set-secrets, state uses pause/resume."}
                for key in unknown
            ],
        )
    for key in UPDATABLE_FIELDS:
        if key in data:
            setattr(system, key, data[key])
    connected_system_settings_validate(connector_type=system.connector_type, settings=system.settings)
    system.full_clean()
    _save(system, user=user, reason=reason)
    if "legal_entities" in data:
        system.legal_entities.set(list(data["legal_entities"]))
    return system


@transaction.atomic
def connected_system_set_secrets(
    *,
    system: ConnectedSystem,
    credentials: dict[str, Any] | None = None,
    webhook_secret: str | None = None,
    clear_credentials: bool = False,
    clear_webhook_secret: bool = False,
    user: Any = None,
    reason: str = "credentials changed",
) -> list[str]:
    """Replace or clear the encrypted credentials and webhook secret; None keeps the current value.

    Returns the names of the secrets that changed. History rows record only the timestamp (the
    secret columns are excluded from history) and the log line names the system, never a value.
    """
    changed = _apply_secrets(
        system,
        credentials=credentials,
        webhook_secret=webhook_secret,
        clear_credentials=clear_credentials,
        clear_webhook_secret=clear_webhook_secret,
    )
    if not changed:
        return []
    _save(system, user=user, reason=reason, update_fields=[*changed, "credentials_updated_at", "updated_at"])
    _log_secrets_changed(system, changed, user)
    return changed


def _state_set(system: ConnectedSystem, *, state: str, user: Any, reason: str) -> ConnectedSystem:
    if system.state == state:
        return system
    previous = system.state
    system.state = state
    _save(system, user=user, reason=reason, update_fields=["state", "updated_at"])
    logger.info("connected system state changed", extra={"system": system.slug, "from": previous, "to": state})
    return system


@transaction.atomic
def connected_system_pause(*, system: ConnectedSystem, user: Any = None, reason: str = "paused") -> ConnectedSystem:
    """Stop all traffic to and from a system until it is resumed (idempotent)."""
    return _state_set(system, state=SystemState.PAUSED, user=user, reason=reason)


@transaction.atomic
def connected_system_resume(*, system: ConnectedSystem, user: Any = None, reason: str = "resumed") -> ConnectedSystem:
    """Put a paused (or circuit-open) system back to active (idempotent)."""
    return _state_set(system, state=SystemState.ACTIVE, user=user, reason=reason)


# The engine's transport runs every call to a connected system, the connection test too; it registers itself
# here at start-up (SyncConfig.ready), because the engine builds on this app, not the other way round.
_health_check_runners: list[Callable[[ConnectedSystem], HealthResult]] = []


def health_check_runner_register(runner: Callable[[ConnectedSystem], HealthResult]) -> None:
    """Make `runner(system)` the way a connection test calls the system (a second registration replaces)."""
    _health_check_runners[:] = [runner]


def connected_system_test_connection(*, system: ConnectedSystem) -> HealthResult:
    """Run the connector's health check and report the outcome instead of raising."""
    started = time.perf_counter()
    try:
        if not _health_check_runners:
            raise HubError(
                "No transport is registered to call connected systems.", hint="Add the 'sync' app to INSTALLED_APPS."
            )
        result = _health_check_runners[0](system)
    except ConnectorError as exc:
        kind = "retryable" if exc.retryable else "terminal"
        result = HealthResult(
            ok=False,
            status_code=exc.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            message=f"{exc.detail} ({kind})",
            retryable=exc.retryable,
        )
    except HubError as exc:
        result = HealthResult(
            ok=False,
            status_code=None,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            message=exc.detail,
            retryable=False,
        )
    logger.info(
        "connection tested",
        extra={"system": system.slug, "ok": result.ok, "status": result.status_code, "duration_ms": result.duration_ms},
    )
    return result


def _encrypted_columns() -> list[tuple[type[models.Model], list[models.Field]]]:
    found: list[tuple[type[models.Model], list[models.Field]]] = []
    for model in apps.get_models():
        fields: list[models.Field] = [
            f for f in model._meta.concrete_fields if isinstance(f, (EncryptedJSONField, EncryptedTextField))
        ]
        if fields and not model._meta.proxy:
            found.append((model, fields))
    return found


@transaction.atomic
def field_keys_rotate() -> dict[str, int]:
    """Re-encrypt every encrypted column with the first key of FIELD_ENCRYPTION_KEY.

    Works on the raw stored tokens (no decrypt-then-save through the model, so no history rows and no
    plaintext in memory longer than Fernet needs). Returns counts: rows seen, values re-encrypted, empty.
    """
    counts = {"rows": 0, "rotated": 0, "empty": 0}
    quote = connection.ops.quote_name
    for model, fields in _encrypted_columns():
        columns = ", ".join(quote(str(f.column)) for f in fields)
        pk_column = quote(str(model._meta.pk.column))
        with connection.cursor() as cursor:
            # The table and column names come from the model metadata, not from input.
            cursor.execute(f"SELECT {pk_column}, {columns} FROM {quote(model._meta.db_table)}")  # noqa: S608
            rows = cursor.fetchall()
        for pk, *values in rows:
            counts["rows"] += 1
            updates: dict[str, Any] = {}
            for field, token in zip(fields, values, strict=True):
                if not token:
                    counts["empty"] += 1
                    continue
                # Value(...) with a plain TextField skips the encrypting get_prep_value: the token is stored as is.
                try:
                    rotated = rotate_token(token)
                except InvalidToken as exc:
                    raise ImproperlyConfigured(
                        f"{model._meta.label} {pk}: {field.name} cannot be decrypted with any key in "
                        "FIELD_ENCRYPTION_KEY; add the key it was written with after the new one. Nothing was changed."
                    ) from exc
                updates[field.attname] = Value(rotated, output_field=models.TextField())
                counts["rotated"] += 1
            if updates:
                model._base_manager.filter(pk=pk).update(**updates)
    logger.info("field keys rotated", extra=counts)
    return counts
