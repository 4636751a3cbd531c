"""Import-export of resources (PSA person ↔ ERP employee links) from the admin list page (CSV, XLSX, JSON).

One row per link: psa_system and erp_system by slug, legal_entity by code (empty: every legal entity the ERP
serves). A row is identified by those three and person_ref, so importing the same file again changes nothing and
a new employee_ref relinks the person. All-or-nothing like every hub import: each row runs the link's own
validation (a PSA that is not a PSA, an ERP that does not serve the legal entity), every error names its row and
column, and one bad row stores nothing.
"""

from __future__ import annotations

from typing import Any

from import_export import fields

from connectors.models import ConnectedSystem
from governance.models import LegalEntity
from governance.resources import IMPORT_RESOURCES, HubResource, LookupWidget, import_reason
from workflows.models import ResourceLink
from workflows.resource_links import resource_link_save


class ResourceLinkResource(HubResource):
    """Resources keyed by PSA, person, ERP and legal entity; saving goes through resource_link_save (history,
    audit, and the release of entries held for the person, once the import is confirmed)."""

    psa_system = fields.Field(
        attribute="psa_system", column_name="psa_system", widget=LookupWidget(ConnectedSystem, "slug", "system")
    )
    erp_system = fields.Field(
        attribute="erp_system", column_name="erp_system", widget=LookupWidget(ConnectedSystem, "slug", "system")
    )
    legal_entity = fields.Field(
        attribute="legal_entity", column_name="legal_entity", widget=LookupWidget(LegalEntity, "code", "legal entity")
    )

    class Meta:
        model = ResourceLink
        import_id_fields = ("psa_system", "person_ref", "erp_system", "legal_entity")
        fields = (
            "psa_system",
            "person_ref",
            "person_name",
            "erp_system",
            "legal_entity",
            "employee_ref",
            "employee_name",
            "notes",
        )

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        self._dry_run = bool(kwargs.get("dry_run"))
        self._user = kwargs.get("user")
        self._reason = import_reason(kwargs.get("file_name"))
        super().before_import(dataset, **kwargs)

    def get_instance(self, instance_loader: Any, row: Any) -> ResourceLink | None:
        # An empty legal_entity cell is the ERP-wide link, which a plain lookup by NULL would not find.
        try:
            values = {
                name: self.fields[name].clean(row)
                for name in ("psa_system", "person_ref", "erp_system", "legal_entity")
            }
        except ValueError:
            return None  # the row's own validation names the unknown system or entity
        return ResourceLink.objects.filter(
            psa_system=values["psa_system"],
            person_ref=str(values["person_ref"] or "").strip(),
            erp_system=values["erp_system"],
            legal_entity=values["legal_entity"],
        ).first()

    def do_instance_save(self, instance: ResourceLink, is_create: bool) -> None:
        resource_link_save(
            link=instance,
            user=getattr(self, "_user", None),
            reason=getattr(self, "_reason", "import"),
            release_held=not getattr(self, "_dry_run", True),
        )


IMPORT_RESOURCES.setdefault("resources", ResourceLinkResource)
