"""Fault injection: one decorator around every sandbox view applies its system's SandboxFaultProfile.

Every count ("every Nth request", the 5xx burst, the rate-limit window, the accept-then-fail writes) is
kept in Django's cache, which the web processes share, under the profile's `generation`; saving a
profile renews the generation, so counting restarts at request 1 and tests are deterministic.
Order per request: latency, 5xx burst, 429 rate limit, error status, timeout, then the view itself,
then accept-then-fail on a successful write.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse

from sandbox.choices import AcceptThenFailMode, TimeoutAction

logger = logging.getLogger(__name__)

COUNTER_TTL_SECONDS = 24 * 3600
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FAULT_HEADER = "X-Sandbox-Fault"


def counter_key(system: str, generation: str, name: str) -> str:
    return f"sandbox:faults:{system}:{generation}:{name}"


def _next(key: str, timeout: int = COUNTER_TTL_SECONDS) -> int:
    # add() is a no-op when the key exists; incr() is atomic on Redis, so every process sees one sequence.
    cache.add(key, 0, timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout)
        return 1


def _fault_response(status: int, kind: str, message: str, *, retry_after: int | None = None) -> HttpResponse:
    response = JsonResponse({"error": "sandbox_fault", "fault": kind, "message": message}, status=status)
    response[FAULT_HEADER] = kind
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _client_socket(request: HttpRequest) -> socket.socket | None:
    """The connection's socket: gunicorn puts it in the environ; Django's dev/live server hides it in wsgi.input."""
    sock = request.META.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        return sock
    stream: Any = request.META.get("wsgi.input")
    # Django's LimitedStream keeps only the bound `read` of the socket file: read.__self__ is that file,
    # a BufferedReader whose raw SocketIO holds the socket.
    reader = getattr(getattr(stream, "_read", None), "__self__", None)
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def drop_connection(request: HttpRequest, kind: str) -> HttpResponse:
    """Hang up without an answer. Under Django's test client (no socket) answer 502 with the fault header."""
    sock = _client_socket(request)
    if sock is not None:
        with contextlib.suppress(OSError):  # the client may have gone already
            sock.shutdown(socket.SHUT_RDWR)
        logger.info("sandbox dropped the connection", extra={"fault": kind, "path": request.path})
    return _fault_response(502, kind, "The sandbox dropped the connection (simulated).")


def apply_faults(profile: dict[str, Any], request: HttpRequest, call_view: Callable[[], HttpResponse]) -> HttpResponse:
    """Answer `request` through `call_view`, misbehaving as the (enabled) profile says."""
    system, generation = profile["system"], profile["generation"]
    if profile["latency_ms"]:
        time.sleep(profile["latency_ms"] / 1000)

    n = _next(counter_key(system, generation, "requests"))
    retry_after = profile["retry_after_seconds"]
    if n <= profile["burst_5xx"]:
        return _fault_response(
            503, "burst_5xx", f"Burst failure {n} of {profile['burst_5xx']}.", retry_after=retry_after
        )

    every = profile["rate_limit_every_nth"]
    if every and n % every == 0:
        return _fault_response(429, "rate_limit", "Too many requests (every Nth).", retry_after=retry_after)
    if profile["rate_limit_requests"]:
        window = profile["rate_limit_window_seconds"]
        bucket = int(time.time() // window)
        used = _next(counter_key(system, generation, f"window:{bucket}"), timeout=window * 2)
        if used > profile["rate_limit_requests"]:
            wait = max(1, int((bucket + 1) * window - time.time()) + 1)
            return _fault_response(429, "rate_limit", "Rate limit of the window exceeded.", retry_after=wait)

    every = profile["error_every_nth"]
    if (every and n % every == 0) or (
        profile["error_rate"] and random.Random(f"{profile['seed']}:{n}").random() < profile["error_rate"]  # noqa: S311
    ):
        return _fault_response(profile["error_status"], "error", f"Injected error on request {n}.")

    if profile["timeout_seconds"]:
        time.sleep(profile["timeout_seconds"])
        if profile["timeout_action"] == TimeoutAction.HANG_UP:
            return drop_connection(request, "timeout")

    response = call_view()

    every = profile["accept_then_fail_every_nth"]
    if every and request.method in WRITE_METHODS and 200 <= response.status_code < 300:
        writes = _next(counter_key(system, generation, "writes"))
        if writes % every == 0:
            if profile["accept_then_fail_mode"] == AcceptThenFailMode.DROP:
                return drop_connection(request, "accept_then_fail")
            return _fault_response(502, "accept_then_fail", "Bad gateway (the write was stored).")
    return response


def with_faults(system: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a sandbox view so its system's fault profile applies to it."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            from sandbox.selectors import fault_profile_active

            profile = fault_profile_active(system=system)
            if profile is None:
                return view(request, *args, **kwargs)
            return apply_faults(profile, request, lambda: view(request, *args, **kwargs))

        return wrapped

    return decorator
