from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflows"

    def ready(self) -> None:
        # The flows register their pipeline stages, rules, flow runners, follow-up handlers and exception-item
        # actions at import in every process (web, worker, beat), so all agree.
        from workflows import actions, invoice_status, milestone_billing, rules, time_expense, triggers  # noqa: F401
