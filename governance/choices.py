"""Status words and fixed vocabularies of the governance app."""

from django.db import models


class ConflictAction(models.TextChoices):
    IGNORE = "ignore", "Ignore the update (record the conflict)"
    EXCEPTION = "exception", "Send to the exception queue"


class RateUnit(models.TextChoices):
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class Flow(models.TextChoices):
    OPPORTUNITY_TO_PROJECT = "opportunity_to_project", "Opportunity to project"
    TIME_EXPENSE_TO_ERP = "time_expense_to_erp", "Approved time and expense to ERP"
    MILESTONE_BILLING = "milestone_billing", "Milestone to billing"
    INVOICE_STATUS = "invoice_status", "Invoice and payment status to CRM"
    CLIENT_MASTER = "client_master", "Client master"


class Trigger(models.TextChoices):
    EVENT = "event", "Event"
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"


class Region(models.TextChoices):
    AMERICAS = "americas", "Americas"
    EMEA = "emea", "EMEA"
    APAC = "apac", "APAC"


class PeriodStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class ErpPeriodState(models.TextChoices):
    """A period's state as the ERP reports it (Tryton's account.period states; the sandbox ERP uses the same)."""

    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"
    LOCKED = "locked", "Locked"
