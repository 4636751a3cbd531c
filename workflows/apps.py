from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflows"

    def ready(self) -> None:
        # Registered at import in every process (web, worker, beat), so all agree on the actions, the
        # duplicate-check rule and the follow-up subscriber.
        from workflows import actions, rules, triggers  # noqa: F401
