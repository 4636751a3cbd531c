from django.apps import AppConfig


class InsightsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "insights"

    def ready(self) -> None:
        from exception_queue.ports import item_detail_provider_register
        from insights import services
        from insights.trace import item_detail_trace
        from sync.progress import ProgressService, progress_service_register

        # The engine reports the progress of pulls and file drops; insights keeps and shows it.
        progress_service_register(
            ProgressService(
                start=services.batch_progress_start,
                advance=services.batch_progress_advance,
                finish=services.batch_progress_finish,
                poll_start=services.poll_progress_start,
                poll_finish=services.poll_progress_finish,
            )
        )

        # An exception item's page shows the trace of its work (the queue cannot import insights itself).
        item_detail_provider_register("insights.trace", item_detail_trace)
