from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "reconciliation"
    verbose_name = "Reconciliation"

    def ready(self) -> None:
        # Runs and their rows are operational data: every list, detail and export is scoped by legal entity.
        from integrationhub.scoping import operational_scope_register

        operational_scope_register("reconciliation.reconciliationrun", "legal_entity")
        operational_scope_register("reconciliation.reconciliationrow", "legal_entity")
