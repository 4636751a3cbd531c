"""The process's Prometheus counters, incremented where the work happens (any app) and exposed by insights'
/metrics. They live here, at the bottom of the apps' layers, so the engine counts without importing insights."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "hub_http_requests_total", "HTTP requests answered, by view, method and status code.", ["view", "method", "status"]
)
LATENCY = Histogram(
    "hub_http_request_duration_seconds",
    "Server time of HTTP requests, by view and method.",
    ["view", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# Inbound events stored without spending their system's inbound budget because the cache that holds the
# budgets could not be reached (sync.services.inbound_budget_spend fails open).
INBOUND_BUDGET_FAIL_OPEN = Counter(
    "hub_inbound_budget_fail_open",
    "Inbound events admitted without their system's inbound budget because the cache was unreachable.",
)
