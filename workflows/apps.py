from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflows"

    def ready(self) -> None:
        # Registers the time and expense flow's pipeline stage, flow runner and override action at start-up,
        # so web and worker processes agree.
        from workflows import time_expense  # noqa: F401
