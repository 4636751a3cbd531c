"""Models of the project app: API keys, the append-only audit log and users' legal-entity scope."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from integrationhub.errors import HubError


class AuditImmutableError(HubError):
    status = 409
    code = "audit_immutable"
    title = "The audit log is append-only"


class ApiKey(models.Model):
    """A machine client's credential: stored as a SHA-256 hash, acting as its owner within its scopes."""

    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'CRM webhook relay'.")
    prefix = models.CharField(max_length=8, unique=True, help_text="The key's first 8 characters, to recognise it.")
    # SHA-256 is enough for a 256-bit random secret (nothing to brute-force); a slow hash would cost every request.
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="Scopes such as config:read or messages:replay.")
    legal_entity = models.ForeignKey(
        "governance.LegalEntity",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="Restricts the key to one legal entity's records (and never beyond its owner's entities).",
    )
    # Fail closed: a key with neither a legal entity nor this flag reads no entity's operational records.
    all_entities = models.BooleanField(
        default=False,
        help_text="Every legal entity its owner may see; only an integration admin can grant it (audited).",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="The key acts as this user: the owner's role permissions apply on top of the scopes.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditImmutableError("Audit events cannot be changed.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("Audit events cannot be deleted.")


class AuditEvent(models.Model):
    """One append-only audit record: who did what to which object, when and from where.

    No foreign keys on purpose: the row never changes, so it names the actor and key by value and
    survives the user or key it mentions. A database trigger refuses UPDATE and DELETE.
    """

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.IntegerField(null=True, blank=True, db_index=True)
    actor_username = models.CharField(max_length=150, blank=True, db_index=True)
    api_key_id = models.IntegerField(null=True, blank=True)
    api_key_prefix = models.CharField(max_length=8, blank=True)
    action = models.CharField(max_length=60, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    summary = models.CharField(max_length=500, blank=True)
    details = models.JSONField(default=dict, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    # By value, like the actor: the legal entity of the record acted on, for legal-entity scoping of the log.
    legal_entity_id = models.IntegerField(
        null=True, blank=True, db_index=True, help_text="The legal entity of the record acted on; empty if none."
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True, help_text="The client's User-Agent header, if any.")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        # Nobody adds, changes or deletes audit rows by hand; viewing is the only permission.
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.action} {self.object_type} {self.object_id}".strip()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditImmutableError("Audit events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("Audit events cannot be deleted.")


class UserLegalEntityScope(models.Model):
    """The legal entities a user works on. No row, or a row with no entities and no flag, grants none;
    `all_entities` grants every entity and only an integration admin may set it (superusers have it implicitly)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="legal_entity_scope")
    legal_entities = models.ManyToManyField("governance.LegalEntity", blank=True, related_name="+")
    all_entities = models.BooleanField(
        default=False,
        help_text="Every legal entity, including records whose entity is unknown. Only integration admins grant it.",
    )

    class Meta:
        verbose_name = "user legal-entity scope"

    def __str__(self) -> str:
        if self.all_entities:
            return f"{self.user}: all entities"
        return f"{self.user}: {', '.join(e.code for e in self.legal_entities.all()) or 'no entities'}"
