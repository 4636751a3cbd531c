"""Status words of the workflows app."""

from django.db import models


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    HELD = "held", "Held at a step"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    COMPLETED = "completed", "Completed"
    COMPENSATING = "compensating", "Compensating"
    COMPENSATED = "compensated", "Compensated (completed steps undone)"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    COMPENSATED = "compensated", "Compensated"
    COMPENSATION_FAILED = "compensation_failed", "Compensation failed"


ACTIVE_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.HELD, RunStatus.AWAITING_APPROVAL, RunStatus.COMPENSATING)
FINISHED_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.CANCELLED, RunStatus.REJECTED)


class PostingKind(models.TextChoices):
    POST = "post", "Posted"
    ADJUSTMENT = "adjustment", "Adjustment (the difference of a corrected entry)"
    REVERSAL = "reversal", "Reversal (a withdrawn entry)"


class PostingStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    POSTED = "posted", "Posted in the ERP"
    FAILED = "failed", "Rejected by the ERP (needs a person)"
