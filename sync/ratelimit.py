"""One rate budget per target system, shared by every worker through the Django cache (Redis in production).

Each system gets a window of `max(1, 1/rate)` seconds holding `rate * window` calls; a call takes a slot by
`cache.incr` on the key of the current window. This is a token bucket refilled once per window: on Redis
`incr` is atomic, so the budget holds across any number of workers. The embedded file cache has no atomic
increment, so there the budget is approximate under concurrent workers (good enough for a single machine).
Celery's own `rate_limit` is per worker and could not enforce a per-system budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal

from integrationhub.throttling import counter_add

KEY_PREFIX = "hub:rate"


@dataclass(frozen=True)
class RateDecision:
    """Whether a call may go now, and if not how long until the next window opens."""

    allowed: bool
    wait_seconds: float


def _window(rate_per_second: float) -> tuple[float, int]:
    window = max(1.0, 1.0 / rate_per_second)
    capacity = max(1, math.floor(rate_per_second * window))
    return window, capacity


def rate_budget_take(*, system_key: str, rate_per_second: Decimal | float, now: float | None = None) -> RateDecision:
    """Take one call from the system's budget; `allowed` is False when the current window is spent."""
    rate = float(rate_per_second)
    if rate <= 0:
        return RateDecision(True, 0.0)
    window, capacity = _window(rate)
    current = time.time() if now is None else now
    slot = math.floor(current / window)
    # The expiry outlives the window so a late increment never recreates it.
    used = counter_add(f"{KEY_PREFIX}:{system_key}:{slot}", 1, timeout=int(window) + 5)
    if used <= capacity:
        return RateDecision(True, 0.0)
    return RateDecision(False, max(0.0, (slot + 1) * window - current))


def rate_budget_wait(
    *, system_key: str, rate_per_second: Decimal | float, max_wait_seconds: float = 2.0
) -> RateDecision:
    """Take a call from the budget, sleeping into the next window(s) for at most `max_wait_seconds`."""
    deadline = time.monotonic() + max_wait_seconds
    while True:
        decision = rate_budget_take(system_key=system_key, rate_per_second=rate_per_second)
        if decision.allowed:
            return decision
        remaining = deadline - time.monotonic()
        if remaining <= 0 or decision.wait_seconds > remaining:
            return decision
        time.sleep(decision.wait_seconds + 0.001)


def rate_budget_take_many(
    *, system_key: str, rate_per_second: Decimal | float, count: int, now: float | None = None
) -> int:
    """Take up to `count` calls from the system's budget in one increment; returns how many were granted
    (a batch of deliveries asks once instead of once per call)."""
    rate = float(rate_per_second)
    if rate <= 0 or count <= 0:
        return max(count, 0)
    window, capacity = _window(rate)
    current = time.time() if now is None else now
    used = counter_add(f"{KEY_PREFIX}:{system_key}:{math.floor(current / window)}", count, timeout=int(window) + 5)
    return max(0, min(count, capacity - (used - count)))
