"""Tasks of the sandbox app: delivering the CRM's signed webhooks on the delivery queue."""

from __future__ import annotations

from celery import shared_task

from sandbox import services

MAX_RETRIES = 5


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True)
def sandbox_webhook_deliver_task(self, delivery_id: int) -> str:  # type: ignore[no-untyped-def]
    """Send one sandbox webhook; retry timeouts, connection errors, 429 and 5xx with exponential backoff."""
    final = self.request.retries >= MAX_RETRIES
    outcome = services.webhook_delivery_attempt(delivery_id=delivery_id, final=final)
    if outcome.retryable and not final:
        raise self.retry(countdown=min(300, 2 ** (self.request.retries + 1)))
    return "delivered" if outcome.delivered else "failed"
