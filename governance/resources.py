"""Import-export resources of the governance app (CSV, XLSX and JSON through the admin or governance_import).

Imports are all-or-nothing: every row is validated with the model's full_clean() (so the same overlap and
conflict checks as the admin and API apply), every row's errors are collected, and one bad row rolls the
whole file back. Saved rows carry the importing user and "import of <file>" in their history.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from import_export import fields, resources, widgets

from connectors.models import ConnectedSystem
from governance import services
from governance.models import LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from mappings.models import CanonicalEntity


def import_reason(file_name: str | None) -> str:
    return f"import of {file_name or 'a file'}"


class LookupWidget(widgets.ForeignKeyWidget):
    """A foreign key by a readable key (code, name, slug) that says what to do when the key is unknown."""

    def __init__(self, model: Any, field: str, label: str) -> None:
        super().__init__(model, field)
        self.label = label

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        try:
            return super().clean(value, row, **kwargs)
        except self.model.DoesNotExist:
            # A ValueError becomes a row validation error on this column instead of an opaque crash.
            raise ValueError(
                f"No {self.label} has the {self.field} {value!r}; create it first or correct it."
            ) from None


class FieldListWidget(widgets.Widget):
    """A list of field paths: a JSON list, or paths separated by commas (easier to type in a spreadsheet)."""

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> list[str]:
        if value in (None, ""):
            return []
        if isinstance(value, list):
            return [str(item).strip() for item in value]
        text = str(value).strip()
        if text.startswith("["):
            return widgets.JSONWidget().clean(text) or []
        return [part.strip() for part in text.split(",") if part.strip()]

    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> str:
        return ", ".join(value or [])


class HubResource(resources.ModelResource):
    """Base resource: full_clean() per row, one transaction, rollback on any invalid row, history with who and why."""

    class Meta:
        use_transactions = True
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def import_data(self, dataset: Any, **kwargs: Any) -> Any:
        # All-or-nothing even through the admin's confirm step, which does not ask for it.
        kwargs["rollback_on_validation_errors"] = True
        kwargs["use_transactions"] = True
        return super().import_data(dataset, **kwargs)

    def before_save_instance(self, instance: Any, row: Any, **kwargs: Any) -> None:
        services._stamp(instance, user=kwargs.get("user"), reason=import_reason(kwargs.get("file_name")))


class LegalEntityResource(HubResource):
    """Legal entities, keyed by code."""

    class Meta:
        model = LegalEntity
        import_id_fields = ("code",)
        fields = ("code", "name", "country", "base_currency", "tax_jurisdiction", "region")

    def do_instance_save(self, instance: LegalEntity, is_create: bool) -> None:
        services.legal_entity_save(legal_entity=instance)


class OwnershipRuleResource(HubResource):
    """Ownership rules with the entity by name and the owning system by slug; a blank id adds a rule."""

    entity = fields.Field(
        attribute="entity", column_name="entity", widget=LookupWidget(CanonicalEntity, "name", "canonical entity")
    )
    owning_system = fields.Field(
        attribute="owning_system",
        column_name="owning_system",
        widget=LookupWidget(ConnectedSystem, "slug", "connected system"),
    )
    field_group = fields.Field(attribute="field_group", column_name="field_group", widget=FieldListWidget())

    class Meta:
        model = OwnershipRule
        # ["id"] exactly: import-export then accepts a file without an id column (every row is a new rule).
        import_id_fields = ["id"]
        fields = ("id", "entity", "field_group", "lifecycle_stage", "owning_system", "conflict_action", "notes")

    def do_instance_save(self, instance: OwnershipRule, is_create: bool) -> None:
        services.ownership_rule_save(rule=instance)


class SyncPolicyResource(HubResource):
    """Sync policies, keyed by name; saving goes through sync_policy_save so beat schedules follow the file."""

    legal_entity = fields.Field(
        attribute="legal_entity", column_name="legal_entity", widget=LookupWidget(LegalEntity, "code", "legal entity")
    )
    validation_rules = fields.Field(
        attribute="validation_rules", column_name="validation_rules", widget=widgets.JSONWidget()
    )

    class Meta:
        model = SyncPolicy
        import_id_fields = ("name",)
        fields = (
            "name",
            "flow",
            "legal_entity",
            "trigger",
            "cron",
            "batch_size",
            "max_attempts",
            "backoff_base_seconds",
            "backoff_cap_seconds",
            "jitter",
            "timeout_seconds",
            "rate_limit_per_second",
            "validation_rules",
            "approval_threshold_amount",
            "second_approval_threshold_amount",
            "approval_currency",
            "dead_letter_threshold",
            "ordering_key_path",
            "active",
        )

    def import_instance(self, instance: Any, row: Any, **kwargs: Any) -> None:
        super().import_instance(instance, row, **kwargs)
        # An empty JSON cell means "no rules", not NULL (the column is NOT NULL).
        if instance.validation_rules is None:
            instance.validation_rules = []

    def do_instance_save(self, instance: SyncPolicy, is_create: bool) -> None:
        services.sync_policy_save(policy=instance)


CARD_COLUMNS = (
    "card_name",
    "legal_entity",
    "currency",
    "valid_from",
    "valid_to",
    "client_ref",
    "contract_ref",
    "tolerance_percent",
)
LINE_COLUMNS = ("role", "bill_rate", "cost_rate", "unit")


class RateCardResource(HubResource):
    """One row per rate card line, carrying its card's columns; importing creates or updates card and line.

    A card is identified by legal entity, currency, client_ref, contract_ref and valid_from (at most one card
    of a scope starts on a day), a line by its card and role. Several rows of one card must agree on the
    card's columns.
    """

    card_name = fields.Field(attribute="rate_card__name", column_name="card_name", readonly=True)
    legal_entity = fields.Field(attribute="rate_card__legal_entity__code", column_name="legal_entity", readonly=True)
    currency = fields.Field(attribute="rate_card__currency", column_name="currency", readonly=True)
    valid_from = fields.Field(
        attribute="rate_card__valid_from",
        column_name="valid_from",
        widget=widgets.DateWidget("%Y-%m-%d"),
        readonly=True,
    )
    valid_to = fields.Field(
        attribute="rate_card__valid_to", column_name="valid_to", widget=widgets.DateWidget("%Y-%m-%d"), readonly=True
    )
    client_ref = fields.Field(attribute="rate_card__client_ref", column_name="client_ref", readonly=True)
    contract_ref = fields.Field(attribute="rate_card__contract_ref", column_name="contract_ref", readonly=True)
    tolerance_percent = fields.Field(
        attribute="rate_card__tolerance_percent",
        column_name="tolerance_percent",
        widget=widgets.DecimalWidget(),
        readonly=True,
    )

    class Meta:
        model = RateCardLine
        import_id_fields = ()
        fields = (*CARD_COLUMNS, *LINE_COLUMNS)
        export_order = (*CARD_COLUMNS, *LINE_COLUMNS)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._card_rows: dict[int, tuple[int, dict[str, Any]]] = {}
        self._card_changed = False

    def get_queryset(self) -> Any:
        return RateCardLine.objects.select_related("rate_card__legal_entity")

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        missing = [
            name for name in ("legal_entity", "currency", "valid_from", "role") if name not in (dataset.headers or [])
        ]
        if missing:
            raise ValidationError(f"The file has no {', '.join(missing)} column; export a rate card for the layout.")
        self._card_rows = {}

    def _card_values(self, row: Any) -> dict[str, Any]:
        # Parse the card columns with their widgets; every unreadable cell is reported, named by its column.
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in CARD_COLUMNS:
            if name not in row:
                continue
            try:
                values[name] = self.fields[name].clean(row)
            except ValueError as exc:
                errors[name] = str(exc)
        code = str(row.get("legal_entity") or "").strip()
        entity = LegalEntity.objects.filter(code=code).first()
        if entity is None:
            errors["legal_entity"] = f"No legal entity has the code {code!r}; create it first or correct it."
        if errors:
            raise ValidationError(errors)
        values["legal_entity"] = entity
        for text in ("client_ref", "contract_ref", "currency", "card_name"):
            values[text] = str(values.get(text) or "").strip()
        return values

    def get_or_init_instance(self, instance_loader: Any, row: Any) -> tuple[RateCardLine, bool]:
        values = self._card_values(row)
        card = (
            RateCard.objects.filter(
                legal_entity=values["legal_entity"],
                currency=values["currency"],
                client_ref=values["client_ref"],
                contract_ref=values["contract_ref"],
                valid_from=values["valid_from"],
            ).first()
            if values.get("valid_from")
            else None
        )
        if card is None:
            card = RateCard(
                legal_entity=values["legal_entity"],
                currency=values["currency"],
                client_ref=values["client_ref"],
                contract_ref=values["contract_ref"],
                valid_from=values.get("valid_from"),  # type: ignore[misc]  # None is reported by full_clean()
            )
        role = str(row.get("role") or "").strip()
        line = card.lines.filter(role=role).first() if card.pk else None
        if line is not None:
            return line, False
        return RateCardLine(rate_card=card, role=role), True

    def import_instance(self, instance: RateCardLine, row: Any, **kwargs: Any) -> None:
        # Line columns and card columns are both checked, so a row reports all of its errors at once.
        errors: dict[str, Any] = {}
        self._card_changed = False
        try:
            super().import_instance(instance, row, **kwargs)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        try:
            self._import_card(instance, row, **kwargs)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def _import_card(self, instance: RateCardLine, row: Any, **kwargs: Any) -> None:
        # The card is created or updated through the service, so its clean() (overlaps, date order,
        # contract needs client) reports on this row.
        card = instance.rate_card
        values = self._card_values(row)
        changes = {
            "name": values.get("card_name") or card.name or f"{values['legal_entity'].code} {values['currency']}",
            "valid_to": values.get("valid_to", card.valid_to),
        }
        if values.get("tolerance_percent") is not None:
            changes["tolerance_percent"] = values["tolerance_percent"]
        self._card_changed = card.pk is None or any(getattr(card, key) != value for key, value in changes.items())
        row_number = kwargs.get("row_number", 0)
        if card.pk in self._card_rows:
            first_row, first_changes = self._card_rows[card.pk]
            differing = sorted(key for key, value in changes.items() if first_changes.get(key) != value)
            if differing:
                raise ValidationError(
                    {
                        {"name": "card_name"}.get(differing[0], differing[0]): (
                            f"Row {first_row} gives this card a different {', '.join(differing)}; "
                            "make every row of one card agree."
                        )
                    }
                )
        for key, value in changes.items():
            setattr(card, key, value)
        if self._card_changed:
            try:
                services.rate_card_save(
                    rate_card=card, user=kwargs.get("user"), reason=import_reason(kwargs.get("file_name"))
                )
            except ValidationError as exc:
                # Report the card's "name" under the file's column name.
                raise ValidationError(
                    {("card_name" if key == "name" else key): value for key, value in exc.message_dict.items()}
                ) from exc
        self._card_rows.setdefault(card.pk, (row_number, changes))
        instance.rate_card = card

    def validate_instance(
        self, instance: Any, import_validation_errors: Any = None, validate_unique: bool = True
    ) -> None:
        if instance.rate_card_id is None and import_validation_errors:
            # The card was refused; the line's own "card is missing" error would only add noise.
            raise ValidationError(import_validation_errors)
        super().validate_instance(instance, import_validation_errors, validate_unique)

    def do_instance_save(self, instance: RateCardLine, is_create: bool) -> None:
        services.rate_card_line_save(line=instance)

    def skip_row(self, instance: Any, original: Any, row: Any, import_validation_errors: Any = None) -> bool:
        # A row whose card changed is an update even if its line did not.
        if self._card_changed:
            return False
        return super().skip_row(instance, original, row, import_validation_errors)


IMPORT_RESOURCES: dict[str, type[HubResource]] = {
    "legal_entities": LegalEntityResource,
    "ownership_rules": OwnershipRuleResource,
    "rate_cards": RateCardResource,
    "sync_policies": SyncPolicyResource,
}


def import_resource_get(name: str) -> type[HubResource]:
    """The resource class for an import: by key (rate_cards) or class name (RateCardResource)."""
    for key, resource in IMPORT_RESOURCES.items():
        if name in (key, resource.__name__, key.replace("_", "-")):
            return resource
    from integrationhub.errors import HubValidationError

    raise HubValidationError(f"Nothing called {name!r} can be imported; use one of {', '.join(IMPORT_RESOURCES)}.")
