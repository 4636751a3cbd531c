"""Status words of the reconciliation app."""

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed (a system could not be read)"


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Run now (page)"
    API = "api", "API"


class RowKind(models.TextChoices):
    TIME_ENTRY = "time_entry", "Time"
    EXPENSE = "expense", "Expense"
    MILESTONE = "milestone", "Milestone"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
