from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflows"

    def ready(self) -> None:
        # The flows register their rules, flow runners, follow-up handlers and exception-item actions.
        from workflows import invoice_status, milestone_billing  # noqa: F401
