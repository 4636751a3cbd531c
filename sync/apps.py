from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class SyncConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sync"

    def ready(self) -> None:
        from connectors.models import ConnectedSystem
        from connectors.services import health_check_runner_register
        from sync.record_actions import exception_queue_ports_register, record_actions_register
        from sync.services import inbound_systems_forget
        from sync.transport import health_check

        record_actions_register()
        exception_queue_ports_register()
        # Connection tests go through the transport like every other call to a system.
        health_check_runner_register(health_check)

        # A system saved or deleted in this process is seen by the next inbound event at once.
        post_save.connect(inbound_systems_forget, sender=ConnectedSystem, dispatch_uid="sync_inbound_systems_saved")
        post_delete.connect(inbound_systems_forget, sender=ConnectedSystem, dispatch_uid="sync_inbound_systems_deleted")
