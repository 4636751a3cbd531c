"""Filters shared by the apps' filtersets: bounded numbers, so a query parameter can never overflow a
database column or a date calculation (an answer of 400 naming the parameter instead of a 500)."""

from __future__ import annotations

import datetime
from typing import Any

import django_filters
from django import forms
from django.utils import timezone

# PostgreSQL bigint (the primary keys are BigAutoField); SQLite's INTEGER has the same range.
MAX_ID = 2**63 - 1
# A hundred years: "waiting at least N hours" beyond that means nothing and overflows timedelta.
MAX_HOURS = 24 * 365 * 100


class IdFilter(django_filters.NumberFilter):
    """A whole number in the range of a primary key."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class HoursFilter(django_filters.NumberFilter):
    """A number of hours between 0 and a hundred years."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_HOURS)
        super().__init__(*args, **kwargs)


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time, compared in UTC.

    Python accepts any offset below 24 hours, PostgreSQL only up to 15:59: `...T13:05:12-16:06` is a valid
    instant that PostgreSQL refuses to parse. Converting to UTC first asks for the same instant."""

    def filter(self, qs: Any, value: Any) -> Any:
        if isinstance(value, datetime.datetime) and timezone.is_aware(value):
            value = value.astimezone(datetime.UTC)
        return super().filter(qs, value)
