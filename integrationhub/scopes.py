"""API key scopes and the scope a request needs.

A view declares its family (`scope_family = "config" | "messages" | "exceptions" | "kpis" | "events" | "audit"`,
default "config"); reads need the family's read scope and writes its write scope. A custom action may
declare `required_scope` (e.g. `@action(..., required_scope=MESSAGES_REPLAY)`: DRF hands the action's
keyword arguments to the view). `scope_family = None` keeps a view to browser sessions: no key can call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EVENTS_WRITE = "events:write"
CONFIG_READ = "config:read"
CONFIG_WRITE = "config:write"
MESSAGES_READ = "messages:read"
MESSAGES_REPLAY = "messages:replay"
EXCEPTIONS_READ = "exceptions:read"
EXCEPTIONS_DECIDE = "exceptions:decide"
KPIS_READ = "kpis:read"
AUDIT_READ = "audit:read"

ALL_SCOPES: tuple[str, ...] = (
    EVENTS_WRITE,
    CONFIG_READ,
    CONFIG_WRITE,
    MESSAGES_READ,
    MESSAGES_REPLAY,
    EXCEPTIONS_READ,
    EXCEPTIONS_DECIDE,
    KPIS_READ,
    AUDIT_READ,
)
SCOPE_CHOICES = [(scope, scope) for scope in ALL_SCOPES]

DEFAULT_FAMILY = "config"
# A family without a scope for one direction refuses that direction to every key (fail closed): KPIs and
# the audit are read-only, inbound events write-only. Messages are written only by a replay and
# exception items only by a decision, so those are their write scopes.
READ_SCOPE: dict[str, str | None] = {
    "config": CONFIG_READ,
    "messages": MESSAGES_READ,
    "exceptions": EXCEPTIONS_READ,
    "kpis": KPIS_READ,
    "events": None,
    "audit": AUDIT_READ,
}
WRITE_SCOPE: dict[str, str | None] = {
    "config": CONFIG_WRITE,
    "messages": MESSAGES_REPLAY,
    "exceptions": EXCEPTIONS_DECIDE,
    "kpis": None,
    "events": EVENTS_WRITE,
    "audit": None,
}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ScopeNotAvailable(Exception):
    """The view cannot be called with any API key (session only, or no scope covers this method)."""


def requires_scope(scope: str) -> Callable[[F], F]:
    """Declare the scope a view method (typically a viewset @action) needs, e.g. @requires_scope(MESSAGES_REPLAY)."""
    if scope not in ALL_SCOPES:
        raise ValueError(f"Unknown scope {scope!r}; known: {', '.join(ALL_SCOPES)}.")

    def decorate(func: F) -> F:
        func.required_scope = scope  # type: ignore[attr-defined]
        return func

    return decorate


def required_scope(*, view: Any, method: str) -> str:
    """The scope an API-key request needs for `method` on `view`; raises ScopeNotAvailable if none allows it."""
    handler_name = getattr(view, "action", None) or method.lower()
    handler = getattr(view, handler_name, None) if isinstance(handler_name, str) else None
    declared = getattr(handler, "required_scope", None) or getattr(view, "required_scope", None)
    if declared:
        return str(declared)
    family = getattr(view, "scope_family", DEFAULT_FAMILY)
    if family is None:
        raise ScopeNotAvailable("This endpoint is for browser sessions only; API keys cannot call it.")
    table = READ_SCOPE if method.upper() in READ_METHODS else WRITE_SCOPE
    if family not in table:
        raise ScopeNotAvailable(f"Unknown scope family {family!r} on {type(view).__name__}.")
    scope = table[family]
    if scope is None:
        verb = "read" if method.upper() in READ_METHODS else "write"
        raise ScopeNotAvailable(f"No API key scope allows a {verb} on {family} endpoints.")
    return scope


def validate_scopes(scopes: list[str]) -> list[str]:
    """The scopes, de-duplicated in canonical order; ValueError naming the unknown ones."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"Unknown scopes: {', '.join(unknown)}. Known scopes: {', '.join(ALL_SCOPES)}.")
    return [scope for scope in ALL_SCOPES if scope in set(scopes)]
