"""Template filters of the insights pages: durations in the unit their size calls for, rates in percent."""

from __future__ import annotations

from django import template

from insights.formatting import duration_display, percent_display

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """{{ seconds|duration }}: "29 s", "105 min", "40 h", "3.5 d"."""
    return duration_display(seconds)


@register.filter
def percent(fraction: float | None) -> str:
    """{{ fraction|percent }}: 0.225 → "22.5%"."""
    return percent_display(fraction)
