"""Celery tasks of the sync engine: thin, take ids, idempotent. Start them with integrationhub.dispatch."""

from __future__ import annotations

from celery import shared_task

from sync import services


@shared_task(name="sync.sync_tick_task", ignore_result=True)
def sync_tick_task() -> dict[str, int]:
    """Beat, every second: hand stored messages and due deliveries to the workers in batches."""
    return services.sync_tick()


@shared_task(name="sync.sync_sweep_task", ignore_result=True)
def sync_sweep_task() -> dict[str, int]:
    """Beat: re-dispatch messages and deliveries a lost task left behind."""
    return services.sync_sweep()


@shared_task(name="sync.messages_process_task", ignore_result=True)
def messages_process_task(message_ids: list[int]) -> dict[str, int]:
    """Map, validate, check ownership, hold and route a batch of messages."""
    return services.messages_process(message_ids=message_ids)


@shared_task(bind=True, name="sync.deliveries_send_task", ignore_result=True)
def deliveries_send_task(self, delivery_ids: list[int]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Send a batch of deliveries to their targets."""
    return services.deliveries_send(delivery_ids=delivery_ids, task_id=self.request.id or "")


@shared_task(name="sync.poll_run_task", ignore_result=True)
def poll_run_task(schedule_id: int) -> dict[str, object] | None:
    """Beat, per PollSchedule: pull the next pages of one entity from one system."""
    result = services.poll_schedule_run(schedule_id=schedule_id)
    return None if result is None else {"outcome": result.outcome, "pages": result.pages, "stored": result.stored}


@shared_task(name="sync.retention_prune_task", ignore_result=True)
def retention_prune_task() -> dict[str, object]:
    """Beat, hourly: prune payloads and old delivery attempts in bounded batches."""
    result = services.retention_prune()
    return {"payloads": result.payloads_pruned, "attempts": result.attempts_deleted, "more": result.more}


@shared_task(name="sync.follow_up_events_process_task", ignore_result=True)
def follow_up_events_process_task(event_ids: list[int]) -> dict[str, int]:
    """Hand a batch of stored follow-up events to their subscribers."""
    return services.follow_up_events_process(event_ids=event_ids)


@shared_task(bind=True, name="sync.time_entries_batch_pull_task", ignore_result=True)
def time_entries_batch_pull_task(self, route_id: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Beat (or a person): the batch path of approved time for one route; continues in a new run when the
    source has more than one run's worth."""
    from integrationhub.dispatch import enqueue_on_commit
    from sync import batch

    result = batch.time_entries_batch_pull(route_id=route_id, task_id=self.request.id or "")
    if result.more:
        enqueue_on_commit(time_entries_batch_pull_task, route_id, queue=batch.BATCH_QUEUE)
    return result.as_dict()
