from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IntegrationhubConfig(AppConfig):
    """Project-level app: owns the role groups and the shared helpers."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "integrationhub"
    verbose_name = "Integration Hub"

    def ready(self) -> None:
        from integrationhub import checks  # noqa: F401  (registers the deploy checks)
        from integrationhub.audit import connect_receivers
        from integrationhub.roles import roles_sync_after_migrate

        connect_receivers()  # failed logins and role changes go to the audit log

        # This app is listed last, so by the time its post_migrate fires every other app's
        # permissions exist and the role groups can be brought in line with ROLE_RULES.
        post_migrate.connect(roles_sync_after_migrate, sender=self)
