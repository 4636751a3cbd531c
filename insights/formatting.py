"""How the dashboard writes its figures for people: a duration in the unit its size calls for, a rate in percent.

The dashboard, its charts (through the unit chosen here, passed to the page) and the leaders' guide share these
rules, so a 29-second median reads "29 s", not "0.0077 h", and 0.225 reads "22.5%", never "225‰".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class DurationUnit:
    """A unit durations are written in: its symbol, its name, and its length in seconds."""

    symbol: str
    name: str
    seconds: int


SECONDS = DurationUnit("s", "seconds", 1)
MINUTES = DurationUnit("min", "minutes", 60)
HOURS = DurationUnit("h", "hours", 3600)
DAYS = DurationUnit("d", "days", 86400)
# Each unit is used below twice the next one: 90 s, not 1.5 min; 100 min, not 1.7 h; 40 h, not 1.7 d.
UNIT_LIMITS: tuple[tuple[DurationUnit, float], ...] = (
    (SECONDS, 2 * 60),
    (MINUTES, 2 * 3600),
    (HOURS, 2 * 86400),
    (DAYS, float("inf")),
)


def duration_unit(seconds: float | None) -> DurationUnit:
    """The unit a duration of `seconds` is written in: seconds under 2 minutes, minutes under 2 hours, hours
    under 2 days, else days."""
    size = abs(seconds or 0.0)
    for unit, limit in UNIT_LIMITS:
        if size < limit:
            return unit
    return DAYS


def duration_axis_unit(values: Iterable[float | None]) -> DurationUnit:
    """The unit of a chart axis: the one its largest value calls for (every point is drawn in it)."""
    known = [abs(value) for value in values if value is not None]
    return duration_unit(max(known) if known else 0.0)


def _number(value: float) -> str:
    """One decimal under 10 (8.5), whole numbers above (29, 105)."""
    return f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def duration_display(seconds: float | None) -> str:
    """`seconds` in the unit its size calls for ("29 s", "105 min", "40 h", "3.5 d"); an en dash when unknown."""
    if seconds is None:
        return "\u2013"
    unit = duration_unit(seconds)
    return f"{_number(seconds / unit.seconds)} {unit.symbol}"


def percent(fraction: float | None) -> float | None:
    """A fraction (0.225) as a percentage with one decimal (22.5); None stays None."""
    return None if fraction is None else round(fraction * 100, 1)


def percent_display(fraction: float | None) -> str:
    """A fraction (0.225) written as a percentage with one decimal ("22.5%"); an en dash when unknown."""
    value = percent(fraction)
    return "\u2013" if value is None else f"{value:.1f}%"
