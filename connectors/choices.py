"""Status words and fixed vocabularies of the connectors app."""

from django.db import models


class SystemRole(models.TextChoices):
    CRM = "crm", "CRM"
    PSA = "psa", "PSA"
    ERP = "erp", "ERP"
    COLLABORATION = "collaboration", "Collaboration"
    ANALYTICS = "analytics", "Analytics"
    HR = "hr", "HR"


class SystemState(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    CIRCUIT_OPEN = "circuit_open", "Circuit open"
