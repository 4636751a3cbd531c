"""Choices of the sandbox app: the simulated systems, their object types and status words."""

from django.db import models


class SandboxSystem(models.TextChoices):
    CRM = "crm", "CRM (Salesforce-shaped)"
    PSA = "psa", "PSA (Harvest-shaped)"
    COLLAB = "collab", "Collaboration (Microsoft Graph-shaped)"
    ERP = "erp", "ERP (sandbox ERP)"
    ANALYTICS = "analytics", "Analytics warehouse (event sink)"


class CrmObject(models.TextChoices):
    ACCOUNT = "Account"
    CONTACT = "Contact"
    OPPORTUNITY = "Opportunity"


class PsaObject(models.TextChoices):
    USER = "users"
    CLIENT = "clients"
    PROJECT = "projects"
    TIME_ENTRY = "time_entries"
    MILESTONE = "milestones"
    EXPENSE = "expenses"


class CollabObject(models.TextChoices):
    USER = "users"
    GROUP = "groups"


class ErpObject(models.TextChoices):
    CLIENT = "clients"
    PROJECT = "projects"
    TIME_ENTRY = "time-entries"
    BILLING_EVENT = "billing-events"
    INVOICE = "invoices"
    PERIOD = "periods"


class ErpPeriodStatus(models.TextChoices):
    OPEN = "open"
    CLOSED = "closed"
    LOCKED = "locked"


class ApprovalStatus(models.TextChoices):
    UNSUBMITTED = "unsubmitted"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class ErpProjectStatus(models.TextChoices):
    ACTIVE = "active"
    CLOSED = "closed"


class ErpInvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    POSTED = "posted"
    PAID = "paid"


class TimeoutAction(models.TextChoices):
    ANSWER = "answer", "Sleep, then answer normally"
    HANG_UP = "hang_up", "Sleep, then drop the connection without an answer"


class AcceptThenFailMode(models.TextChoices):
    BAD_GATEWAY = "502", "Store the write, answer 502"
    DROP = "drop", "Store the write, drop the connection"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# Event names are constants (STYLE 5).
EVENT_OPPORTUNITY_CLOSED_WON = "opportunity.closed_won"
CLOSED_WON = "Closed Won"

# The PSA's approval webhooks (Harvest has none; the sandbox sends them as a PSA with approvals would).
PSA_APPROVAL_EVENTS = {
    ("time_entries", "approved"): "time_entry.approved",
    ("time_entries", "unapproved"): "time_entry.unapproved",
    ("time_entries", "deleted"): "time_entry.deleted",
    ("expenses", "approved"): "expense.approved",
    ("expenses", "unapproved"): "expense.unapproved",
    ("expenses", "deleted"): "expense.deleted",
}
