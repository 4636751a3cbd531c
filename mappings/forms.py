"""Forms of the mappings admin: mapping sets, field rules, value maps and the JSON import upload."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from integrationhub.admin_base import ChangeReasonForm
from integrationhub.errors import flatten_field_errors
from integrationhub.parsers import NUL_REFUSED, contains_nul
from mappings.models import FieldRule, MappingSet, ValueMap, ValueMapEntry


class CompactJSONField(forms.JSONField):
    """Shows JSON on one line (steps, lists) so a rule reads like the editor's table."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, cls=self.encoder)


class MappingSetForm(ChangeReasonForm):
    """A new mapping (version 1) or a draft's name, parent and notes; the lineage is fixed once created."""

    class Meta:
        model = MappingSet
        fields = ["name", "system", "entity", "direction", "legal_entity", "parent", "notes"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        system, entity, direction = cleaned.get("system"), cleaned.get("entity"), cleaned.get("direction")
        parent = cleaned.get("parent")
        if self.instance.pk is None and system and entity and direction:
            lineage = MappingSet.lineage_for(
                system_id=system.pk,
                entity_id=entity.pk,
                direction=direction,
                legal_entity_id=getattr(cleaned.get("legal_entity"), "pk", None),
            )
            existing = MappingSet.objects.filter(lineage=lineage).order_by("-version").first()
            if existing is not None:
                raise forms.ValidationError(
                    f"A mapping for this system, entity, direction and legal entity already exists: {existing}. "
                    "Open it and use “Create draft” to make a new version."
                )
        entity = entity or getattr(self.instance, "entity", None)
        direction = direction or self.instance.direction
        if parent is not None and entity is not None:
            if parent.pk == self.instance.pk:
                self.add_error("parent", "A mapping cannot extend itself.")
            elif parent.entity_id != entity.pk or parent.direction != direction:
                self.add_error(
                    "parent", f"{parent} maps {parent.entity} {parent.direction}; pick one of the same kind."
                )
        return cleaned


class FieldRuleForm(ChangeReasonForm):
    """One rule with its JSON columns; the model's clean() checks paths, transforms, parameters and value maps."""

    source_paths = CompactJSONField(help_text='One or more source paths, for example ["Account.Id"].')
    steps = CompactJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "spellcheck": "false"}),
        help_text='Ordered transforms: [{"transform": "trim", "params": {}}]. See docs/transforms.md.',
    )
    default_value = CompactJSONField(required=False)
    condition = CompactJSONField(required=False)

    class Meta:
        model = FieldRule
        fields = [
            "mapping_set",
            "position",
            "target_path",
            "source_paths",
            "steps",
            "required",
            "has_default",
            "default_value",
            "condition",
            "notes",
        ]

    def clean_steps(self) -> Any:
        return self.cleaned_data.get("steps") or []


class ValueMapForm(ChangeReasonForm):
    default_value = CompactJSONField(required=False, help_text="Used for unmapped values when so configured.")

    class Meta:
        model = ValueMap
        fields = ["name", "description", "unmapped", "default_value", "legal_entity"]


class ValueMapEntryForm(forms.ModelForm):
    target_value = CompactJSONField(help_text='JSON: "closed_won", 3, true or {"a": 1}.')

    class Meta:
        model = ValueMapEntry
        fields = ["source_value", "target_value"]


class MappingSetImportForm(forms.Form):
    """An exported mapping set (or a list of them) as a .json file or pasted text."""

    file = forms.FileField(required=False, help_text="A file saved by “Export JSON”.")
    text = forms.CharField(
        required=False,
        label="Or paste the JSON",
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100, "spellcheck": "false"}),
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        upload, text = cleaned.get("file"), cleaned.get("text")
        if upload:
            raw = upload.read()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
        if not text or not text.strip():
            raise forms.ValidationError("Choose an export file or paste its JSON.")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        if contains_nul(data):
            raise forms.ValidationError(NUL_REFUSED)
        exports = data if isinstance(data, list) else [data]
        cleaned["exports"] = [self._checked_export(index, export, len(exports)) for index, export in enumerate(exports)]
        return cleaned

    @staticmethod
    def _checked_export(index: int, export: Any, count: int) -> dict[str, Any]:
        """The export's shape checked as the API checks it; errors name the field (and the export, if several)."""
        from mappings.api.serializers import MappingSetExportSerializer

        serializer = MappingSetExportSerializer(data=export)
        if serializer.is_valid():
            return dict(serializer.validated_data)
        prefix = f"Export {index + 1}: " if count > 1 else ""
        raise forms.ValidationError(
            [f"{prefix}{error['field']}: {error['message']}" for error in flatten_field_errors(serializer.errors)]
        )
