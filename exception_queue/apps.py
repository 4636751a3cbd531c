from django.apps import AppConfig


class ExceptionQueueConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "exception_queue"
