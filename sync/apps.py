from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class SyncConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sync"

    def ready(self) -> None:
        from connectors.models import ConnectedSystem
        from sync.record_actions import exception_queue_ports_register, record_actions_register
        from sync.services import inbound_systems_forget

        record_actions_register()
        exception_queue_ports_register()

        # A system saved or deleted in this process is seen by the next inbound event at once.
        post_save.connect(inbound_systems_forget, sender=ConnectedSystem, dispatch_uid="sync_inbound_systems_saved")
        post_delete.connect(inbound_systems_forget, sender=ConnectedSystem, dispatch_uid="sync_inbound_systems_deleted")
