from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflows"

    def ready(self) -> None:
        # The flows register their pipeline stages, rules, flow runners, follow-up handlers and exception-item
        # actions at start-up, so web and worker processes agree.
        from workflows import invoice_status, milestone_billing, time_expense  # noqa: F401
