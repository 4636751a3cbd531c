"""Status words and fixed vocabularies of the mappings app."""

from django.db import models


class CanonicalEntityName(models.TextChoices):
    CLIENT = "client", "Client"
    CONTACT = "contact", "Contact"
    OPPORTUNITY = "opportunity", "Opportunity"
    CONTRACT = "contract", "Contract"
    PROJECT = "project", "Project"
    MILESTONE = "milestone", "Milestone"
    RESOURCE = "resource", "Resource"
    ROLE = "role", "Role"
    RATE_CARD = "rate_card", "Rate card"
    TIME_ENTRY = "time_entry", "Time entry"
    EXPENSE = "expense", "Expense"
    INVOICE = "invoice", "Invoice"
    PAYMENT = "payment", "Payment"


class SchemaStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    RETIRED = "retired", "Retired"


class MappingStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    RETIRED = "retired", "Retired"


class Direction(models.TextChoices):
    INBOUND = "inbound", "Inbound (system → canonical)"
    OUTBOUND = "outbound", "Outbound (canonical → system)"


class UnmappedBehaviour(models.TextChoices):
    ERROR = "error", "Fail the record"
    PASS_THROUGH = "pass_through", "Pass the value through"
    DEFAULT = "default", "Use the default value"


class SampleOrigin(models.TextChoices):
    SAVED = "saved", "Saved by an analyst"
    CAPTURED = "captured", "Kept from a real message"
