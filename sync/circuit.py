"""A circuit breaker per target system: after N failures in a row it opens, then lets one probe through.

Counters live in the shared cache so every worker sees the same breaker. The open state is also written
to ConnectedSystem.state (circuit_open) so an admin sees it; while open, deliveries wait (status held) and
burn no retries. After the open period one worker takes the probe slot (cache.add) and tries a single
call: success closes the circuit, failure opens it again for another period.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from connectors.choices import SystemState
from connectors.models import ConnectedSystem

KEY_PREFIX = "hub:circuit"


def failure_threshold() -> int:
    return int(getattr(settings, "HUB_CIRCUIT_FAILURE_THRESHOLD", os.environ.get("HUB_CIRCUIT_FAILURE_THRESHOLD", 5)))


def open_seconds() -> float:
    return float(getattr(settings, "HUB_CIRCUIT_OPEN_SECONDS", os.environ.get("HUB_CIRCUIT_OPEN_SECONDS", 30)))


def _key(system: ConnectedSystem, part: str) -> str:
    return f"{KEY_PREFIX}:{system.slug}:{system.pk}:{part}"


@dataclass(frozen=True)
class CircuitGate:
    """May a call go to the system now? `probe` marks the single trial call of a half-open circuit."""

    allowed: bool
    probe: bool = False
    retry_at: float | None = None


def circuit_gate(*, system: ConnectedSystem, now: float | None = None) -> CircuitGate:
    """Closed: allowed. Open: not allowed until the period ends. Half-open: one caller gets the probe."""
    if system.state != SystemState.CIRCUIT_OPEN:
        return CircuitGate(True)
    current = time.time() if now is None else now
    # A lost cache entry (restart) makes the circuit half-open at once rather than stuck open.
    open_until = float(cache.get(_key(system, "open_until"), 0))
    if current < open_until:
        return CircuitGate(False, retry_at=open_until)
    if cache.add(_key(system, "probe"), 1, timeout=max(5, int(open_seconds()))):
        return CircuitGate(True, probe=True)
    return CircuitGate(False, retry_at=current + 1)


def circuit_open_until(*, system: ConnectedSystem) -> float:
    """When an open circuit lets its probe through (a Unix time; a second from now when unknown)."""
    return float(cache.get(_key(system, "open_until"), 0)) or time.time() + 1


def circuit_record_success(*, system: ConnectedSystem) -> bool:
    """Reset the failure count; close an open circuit. Returns True when the circuit was closed by this call."""
    cache.set(_key(system, "failures"), 0, timeout=None)
    if system.state != SystemState.CIRCUIT_OPEN:
        return False
    cache.delete_many([_key(system, "open_until"), _key(system, "probe")])
    closed = ConnectedSystem.objects.filter(pk=system.pk, state=SystemState.CIRCUIT_OPEN).update(
        state=SystemState.ACTIVE
    )
    system.state = SystemState.ACTIVE
    return bool(closed)


def circuit_record_failure(*, system: ConnectedSystem, now: float | None = None) -> bool:
    """Count a failed call; open the circuit at the threshold (or re-open after a failed probe). True if opened."""
    current = time.time() if now is None else now
    key = _key(system, "failures")
    cache.add(key, 0, timeout=None)
    try:
        failures = int(cache.incr(key))
    except ValueError:
        cache.set(key, 1, timeout=None)
        failures = 1
    if system.state == SystemState.CIRCUIT_OPEN or failures >= failure_threshold():
        cache.set(_key(system, "open_until"), current + open_seconds(), timeout=int(open_seconds()) + 60)
        cache.delete(_key(system, "probe"))
        # Only an active system opens: a paused system stays paused (a person's decision wins).
        ConnectedSystem.objects.filter(pk=system.pk, state=SystemState.ACTIVE).update(state=SystemState.CIRCUIT_OPEN)
        if system.state == SystemState.ACTIVE:
            system.state = SystemState.CIRCUIT_OPEN
        return True
    return False


def circuit_reset(*, system: ConnectedSystem) -> None:
    """Forget the breaker's counters (after an admin resumes the system by hand)."""
    cache.delete_many([_key(system, "failures"), _key(system, "open_until"), _key(system, "probe")])
