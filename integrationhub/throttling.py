"""Request budgets shared by every process through Django's cache (Redis in production, the file cache on
the embedded default): per API key, per client address for anonymous calls and failed keys, and a
helper for plain views (the inbound endpoint's per-system budget).

Fixed windows with an atomic increment: on Redis `incr` is one atomic command, so two web processes
never both spend the last unit. (The file cache's incr is read-then-write; good enough for one machine.)

The client address every per-address budget is keyed by is `client_ip`: the connection's address, or the
X-Forwarded-For hop that the proxies of HUB_TRUSTED_PROXIES vouch for. Nobody else's X-Forwarded-For is
believed: a client could otherwise claim a new address with every request and never run out of budget.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def _redis_client() -> Any:
    """The Redis client behind Django's cache, or None when the cache is not Redis. Kept on the cache's
    backend object (one per thread): Django builds a new client object on every call, which costs more
    than the round trip it makes."""
    from django.core.cache.backends.redis import RedisCacheClient

    backend = getattr(cache, "_cache", None)
    if not isinstance(backend, RedisCacheClient):
        return None
    client = getattr(backend, "_hub_write_client", None)
    if client is None:
        client = backend.get_client(None, write=True)
        backend._hub_write_client = client  # type: ignore[attr-defined]
    return client


def counter_add(key: str, amount: int, *, timeout: int) -> int:
    """Add `amount` to a counter that expires `timeout` seconds after it was created; returns the new value.

    On Redis this is SET NX EX and INCRBY in one pipelined round trip (Django's add() + incr() take three).
    Elsewhere add() then incr(): add() is a no-op when the key exists, so concurrent first callers do not reset
    each other's count."""
    client = _redis_client()
    if client is not None:
        full_key = cache.make_and_validate_key(key)
        pipeline = client.pipeline(transaction=False)
        pipeline.set(full_key, 0, ex=timeout, nx=True)
        pipeline.incrby(full_key, amount)
        _, value = pipeline.execute()
        return int(value)
    cache.add(key, 0, timeout=timeout)
    try:
        return int(cache.incr(key, amount))
    except ValueError:  # expired between add and incr: this call opens the window again
        cache.set(key, amount, timeout=timeout)
        return amount


def cache_add_many(entries: list[tuple[str, str, int]]) -> set[str]:
    """Set each (key, value, timeout) that does not exist yet; returns the keys set. On Redis one pipelined
    round trip of SET NX EX for all of them (a batch's locks), elsewhere one add() each."""
    client = _redis_client()
    if client is None:
        return {key for key, value, timeout in entries if cache.add(key, value, timeout=timeout)}
    pipeline = client.pipeline(transaction=False)
    for key, value, timeout in entries:
        # Django's Redis cache stores strings pickled: the same bytes let cache.get() read the value back.
        stored = cache._cache._serializer.dumps(value)  # type: ignore[attr-defined]
        pipeline.set(cache.make_and_validate_key(key), stored, ex=timeout, nx=True)
    return {key for (key, _, _), done in zip(entries, pipeline.execute(), strict=True) if done}


def budget_spend(*, scope: str, ident: str, rate: str | Rate, now: float | None = None) -> float | None:
    """Spend one unit of `ident`'s budget in `scope`; None when allowed, else the seconds until the next window."""
    limit = rate if isinstance(rate, Rate) else parse_rate(rate)
    now = time.time() if now is None else now
    window = int(now // limit.seconds)
    count = counter_add(f"hub:throttle:{scope}:{ident}:{limit.seconds}:{window}", 1, timeout=limit.seconds + 1)
    if count <= limit.count:
        return None
    return max((window + 1) * limit.seconds - now, 0.001)


# Units a process takes from a shared budget at once (budget_spend_leased): one cache round trip per lease
# instead of per request. A lease is at most this share of the window's budget, so the units a process holds
# unspent when the window ends (which nobody else may spend) stay a small part of it.
LEASE_SHARE = 50
LEASE_MAX = 64


@dataclass
class _Lease:
    key: str
    left: int


_leases: dict[tuple[str, str], _Lease] = {}
_leases_lock = threading.Lock()

# What the cache raises when it cannot be reached: Redis's errors, and OSError for the file cache's disk.
CACHE_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)
# After the cache failed, a hot path does not ask it again for this long: a Redis host that drops packets
# would otherwise cost every request its own connect timeout.
CACHE_RETRY_SECONDS = 5.0


class BudgetUnavailableError(Exception):
    """The cache that holds the shared budgets cannot be reached; the caller decides whether to fail open."""


def _counter_add_or_unavailable(key: str, amount: int, *, timeout: int) -> int:
    # The time of the last failure is kept on the cache's backend object, like the Redis client: one per
    # thread, and a new one when the cache settings change.
    backend = caches[DEFAULT_CACHE_ALIAS]
    if time.monotonic() < getattr(backend, "_hub_retry_at", 0.0):
        raise BudgetUnavailableError(f"the cache failed less than {CACHE_RETRY_SECONDS:g} s ago")
    try:
        return counter_add(key, amount, timeout=timeout)
    except CACHE_ERRORS as error:
        backend._hub_retry_at = time.monotonic() + CACHE_RETRY_SECONDS  # type: ignore[attr-defined]
        raise BudgetUnavailableError(f"the cache did not answer: {error}") from error


def budget_spend_leased(*, scope: str, ident: str, rate: str | Rate, now: float | None = None) -> float | None:
    """budget_spend for a hot path: the process takes up to count/LEASE_SHARE units of the shared window at
    once and spends them locally. It never admits more than the rate across processes (a lease counts in the
    shared counter when taken); it may refuse slightly early while another process still holds leased units.

    Raises BudgetUnavailableError when the cache cannot be reached, at once for CACHE_RETRY_SECONDS after
    a failure."""
    limit = rate if isinstance(rate, Rate) else parse_rate(rate)
    now = time.time() if now is None else now
    window = int(now // limit.seconds)
    key = f"hub:throttle:{scope}:{ident}:{limit.seconds}:{window}"
    with _leases_lock:
        lease = _leases.get((scope, ident))
        if lease is not None and lease.key == key and lease.left > 0:
            lease.left -= 1
            return None
    size = max(1, min(limit.count // LEASE_SHARE, LEASE_MAX))
    count = _counter_add_or_unavailable(key, size, timeout=limit.seconds + 1)
    granted = min(size, limit.count - (count - size))
    if granted <= 0:
        return max((window + 1) * limit.seconds - now, 0.001)
    with _leases_lock:
        _leases[(scope, ident)] = _Lease(key=key, left=granted - 1)
    return None


def budget_exceeded(*, scope: str, ident: str, rate: str | Rate, now: float | None = None) -> float | None:
    """Like budget_spend without spending: the wait if the budget of this window is already used up."""
    limit = rate if isinstance(rate, Rate) else parse_rate(rate)
    now = time.time() if now is None else now
    window = int(now // limit.seconds)
    count = cache.get(f"hub:throttle:{scope}:{ident}:{limit.seconds}:{window}") or 0
    if count < limit.count:
        return None
    return max((window + 1) * limit.seconds - now, 0.001)


# --- the client address ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _networks(values: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"HUB_TRUSTED_PROXIES holds {value!r}, which is neither an IP address nor a network such as "
                "10.0.0.0/8; list the reverse proxies' addresses, comma-separated."
            ) from None
    return tuple(networks)


def trusted_proxies() -> tuple[IPNetwork, ...]:
    """HUB_TRUSTED_PROXIES parsed: the reverse proxies whose X-Forwarded-For the hub believes."""
    return _networks(tuple(value for value in getattr(settings, "HUB_TRUSTED_PROXIES", ()) if value.strip()))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:5678"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def client_ip(request: Any) -> str | None:
    """The address of the client behind a request.

    The connection's address (REMOTE_ADDR), unless that is one of HUB_TRUSTED_PROXIES: then X-Forwarded-For
    is read from its right end, where that proxy appended what it saw, and the first hop that is not itself
    a trusted proxy is the client. Hops further left were written by whoever sent the request and prove
    nothing. A hop that is not an address ends the walk at the last proxy that was trusted."""
    meta = getattr(request, "META", None) or {}
    remote = (meta.get("REMOTE_ADDR") or "").strip()
    proxies = trusted_proxies()
    if not remote or not proxies:
        return remote or None
    current = _address(remote)
    if current is None or not _trusted(current, proxies):
        return remote
    for hop in reversed(str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",")):
        if not hop.strip():
            continue
        address = _address(hop)
        if address is None:
            break
        current = address
        if not _trusted(address, proxies):
            break
    return str(current)


# --- DRF throttles --------------------------------------------------------------------------------------------

# Set on a request whose anonymous budget AnonymousBudgetAuthentication already spent, so that the throttle
# class does not spend it a second time.
ANON_BUDGET_SPENT = "_hub_anon_budget_spent"


def anonymous_budget_spend(request: Any) -> float | None:
    """Spend one unit of the client address's HUB_API_ANON_RATE; None when allowed, else the seconds to wait."""
    setattr(request, ANON_BUDGET_SPENT, True)
    rate = getattr(settings, "HUB_API_ANON_RATE", "120/min")
    return budget_spend(scope="anon", ident=client_ip(request) or "-", rate=rate)


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
    """HUB_API_ANON_RATE per client address for requests without a user.

    DRF checks throttles after permissions, so on an endpoint that needs a user this class never sees an
    anonymous request (it is refused with 401 first): integrationhub.authentication.AnonymousBudgetAuthentication
    spends the budget before that check, and this class only covers views that skip authentication."""

    scope = "anon"
    setting = "HUB_API_ANON_RATE"

    def ident_for(self, request: Any) -> str | None:
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated) or getattr(request, ANON_BUDGET_SPENT, False):
            return None
        return client_ip(request) or "-"
