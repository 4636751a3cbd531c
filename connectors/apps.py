from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ConnectorsConfig(AppConfig):
    """Connected systems and the connector registry."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "connectors"

    def ready(self) -> None:
        from connectors import builtin  # noqa: F401  (registers the built-in connector types)
        from connectors.registry import registry

        # ready() runs after every app's models are loaded, so each app's `connector_plugins` module can
        # register its connector types here; after that the set is fixed for the life of the process.
        autodiscover_modules("connector_plugins")
        registry.freeze()
