"""Status words and fixed vocabularies of the insights app."""

from django.db import models

# The engine reports progress in its own words; insights stores them.
from sync.choices import BatchKind, BatchStatus

__all__ = ["BatchKind", "BatchStatus", "KpiBucket", "KpiRange"]


class KpiRange(models.TextChoices):
    LAST_24H = "24h", "Last 24 hours"
    LAST_7D = "7d", "Last 7 days"
    LAST_30D = "30d", "Last 30 days"
    LAST_90D = "90d", "Last 90 days"
    CUSTOM = "custom", "Custom"


class KpiBucket(models.TextChoices):
    HOUR = "hour", "Hour"
    DAY = "day", "Day"
    WEEK = "week", "Week"


# The custom permission that opens the KPI dashboard and the KPI API (declared on BatchProgress).
PERM_VIEW_KPIS = "insights.view_kpis"
