"""Status words and fixed vocabularies of the sync app."""

from django.db import models


class MessageDirection(models.TextChoices):
    INBOUND = "inbound", "Inbound (from a source system)"
    OUTBOUND = "outbound", "Outbound (emitted by the hub)"


class MessageStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    MAPPED = "mapped", "Mapped to canonical"
    VALIDATED = "validated", "Validated"
    HELD = "held", "Held for approval"
    QUEUED = "queued", "Queued for delivery"
    DELIVERING = "delivering", "Delivering"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (needs a person)"
    DEAD = "dead", "Dead letter"
    SKIPPED_STALE = "skipped_stale", "Skipped: older than the last applied update"


# Once a message is in one of these, the pipeline leaves it alone until a person replays it.
MESSAGE_FINAL_STATUSES = frozenset(
    {MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.DEAD, MessageStatus.SKIPPED_STALE}
)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    HELD = "held", "Held (target paused or circuit open)"
    DELIVERING = "delivering", "Delivering"
    RETRYING = "retrying", "Waiting to retry"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Rejected by the target"
    DEAD = "dead", "Dead letter (retries exhausted)"
    SKIPPED_STALE = "skipped_stale", "Skipped: older than the last applied update"


DELIVERY_OPEN_STATUSES = frozenset(
    {DeliveryStatus.PENDING, DeliveryStatus.HELD, DeliveryStatus.DELIVERING, DeliveryStatus.RETRYING}
)
DELIVERY_DONE_STATUSES = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.SKIPPED_STALE})


class AttemptOutcome(models.TextChoices):
    DELIVERED = "delivered", "Delivered"
    ALREADY_APPLIED = "already_applied", "Found at the target by idempotency key; not sent again"
    RETRYABLE_ERROR = "retryable_error", "Retryable error"
    TERMINAL_ERROR = "terminal_error", "Terminal error"


# Event names emitted for follow-up flows (see sync.services.follow_up_subscribe).
EVENT_MESSAGE_DELIVERED = "sync.message.delivered"
EVENT_MESSAGE_FAILED = "sync.message.failed"


# The action part of the event type of records that arrive without an event: "<entity>.changed" for a
# scheduled pull (the hub cannot tell a create from an update), "<entity>.imported" for a file drop.
PULL_EVENT_ACTION = "changed"
FILE_DROP_EVENT_ACTION = "imported"


class FileDropStatus(models.TextChoices):
    ACCEPTED = "accepted", "Accepted: every row stored"
    REJECTED = "rejected", "Rejected: nothing stored (see the row errors)"
    DUPLICATE = "duplicate", "Duplicate: this file was stored before"


class PollOutcome(models.TextChoices):
    COMPLETE = "complete", "Complete: no more pages"
    PAGE_LIMIT = "page_limit", "Stopped at the page limit; the next run continues"
    RATE_LIMITED = "rate_limited", "Stopped: the system's rate budget is spent; the next run continues"
    ERROR = "error", "Stopped by an error; the cursor stays at the last stored page"
    SKIPPED = "skipped", "Skipped: paused, circuit open, inactive, or another run holds the cursor"
    RUNNING = "running", "Running (a batch pull in progress)"


class FollowUpStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Handled by every subscriber"
    FAILED = "failed", "Failed (retries exhausted)"


class BatchKind(models.TextChoices):
    """What a long run's progress row tracks (insights stores and shows it)."""

    POLL = "poll", "Scheduled pull"
    FILE_DROP = "file_drop", "File drop"


class BatchStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    STOPPED = "stopped", "Stopped early (page limit, rate budget or skipped); the next run continues"
    FAILED = "failed", "Failed"
