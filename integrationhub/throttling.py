"""Request budgets shared by every process through Django's cache (Redis in production, the file cache on
the embedded default): per API key, per client address for anonymous calls and failed keys, and a
helper for plain views (the inbound endpoint's per-system budget).

Fixed windows with an atomic increment: on Redis `incr` is one atomic command, so two web processes
never both spend the last unit. (The file cache's incr is read-then-write; good enough for one machine.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

PERIODS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hour"), 3600),
    **dict.fromkeys(("d", "day"), 86400),
}


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


def parse_rate(rate: str) -> Rate:
    """'600/min' → Rate(600, 60); also '10/5s', '1000/hour', '50/day'."""
    try:
        count_text, period = rate.strip().split("/", 1)
        digits = "".join(ch for ch in period if ch.isdigit())
        unit = period[len(digits) :].strip().lower()
        seconds = int(digits or 1) * PERIODS[unit]
        count = int(count_text)
    except (ValueError, KeyError):
        raise ValueError(f"Bad rate {rate!r}: write it as <count>/<period>, e.g. 600/min or 10/5s.") from None
    if count < 0 or seconds <= 0:
        raise ValueError(f"Bad rate {rate!r}: the count must be >= 0 and the period positive.")
    return Rate(count=count, seconds=seconds)


def validate_rate(value: str) -> None:
    """Model-field validator: an empty value (use the default) or a rate such as 50/s or 1200/min."""
    from django.core.exceptions import ValidationError

    if not value:
        return
    try:
        parse_rate(value)
    except ValueError as error:
        raise ValidationError(str(error), code="invalid_rate") from None


def budget_spend(*, scope: str, ident: str, rate: str | Rate, now: float | None = None) -> float | None:
    """Spend one unit of `ident`'s budget in `scope`; None when allowed, else the seconds until the next window."""
    limit = rate if isinstance(rate, Rate) else parse_rate(rate)
    now = time.time() if now is None else now
    window = int(now // limit.seconds)
    key = f"hub:throttle:{scope}:{ident}:{limit.seconds}:{window}"
    # add() is a no-op when the key exists, so concurrent first requests do not reset each other's count.
    cache.add(key, 0, timeout=limit.seconds + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: start this window again
        cache.add(key, 1, timeout=limit.seconds + 1)
        count = 1
    if count <= limit.count:
        return None
    return max((window + 1) * limit.seconds - now, 0.001)


def budget_exceeded(*, scope: str, ident: str, rate: str | Rate, now: float | None = None) -> float | None:
    """Like budget_spend without spending: the wait if the budget of this window is already used up."""
    limit = rate if isinstance(rate, Rate) else parse_rate(rate)
    now = time.time() if now is None else now
    window = int(now // limit.seconds)
    count = cache.get(f"hub:throttle:{scope}:{ident}:{limit.seconds}:{window}") or 0
    if count < limit.count:
        return None
    return max((window + 1) * limit.seconds - now, 0.001)


class _HubThrottle(BaseThrottle):
    scope = ""
    setting = ""

    def ident_for(self, request: Any) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Any, view: Any) -> bool:
        ident = self.ident_for(request)
        if ident is None:
            return True
        self._wait = budget_spend(scope=self.scope, ident=ident, rate=getattr(settings, self.setting, "600/min"))
        return self._wait is None

    def wait(self) -> float | None:
        # Retry-After is whole seconds; round up so a client that waits exactly that long gets through.
        return math.ceil(self._wait) if self._wait else None


class ApiKeyRateThrottle(_HubThrottle):
    """HUB_API_RATE per API key, whichever process serves the request."""

    scope = "api-key"
    setting = "HUB_API_RATE"

    def ident_for(self, request: Any) -> str | None:
        from integrationhub.models import ApiKey  # not at the top: DRF imports this module while defining APIView

        auth = getattr(request, "auth", None)
        # The random prefix, not the id: ids restart with a new database while the cache may outlive it.
        return auth.prefix if isinstance(auth, ApiKey) else None


class AnonymousRateThrottle(_HubThrottle):
    """HUB_API_ANON_RATE per client address for requests without a user (the endpoints that allow them)."""

    scope = "anon"
    setting = "HUB_API_ANON_RATE"

    def ident_for(self, request: Any) -> str | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return None
        return self.get_ident(request)
