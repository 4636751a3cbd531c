from django.apps import AppConfig


class ExceptionQueueConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "exception_queue"
    verbose_name = "Exception queue"

    def ready(self) -> None:
        # Registers the engine's item actions; the workflows register theirs in their own ready().
        from exception_queue import actions  # noqa: F401
