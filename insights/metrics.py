"""Prometheus metrics: HTTP request metrics (a middleware) and the hub's state, read from the database at scrape time.

The HTTP metrics live in the process (prometheus_client's default registry); with several gunicorn workers set
PROMETHEUS_MULTIPROC_DIR and each scrape sums every worker (prometheus_client's multiprocess mode). The hub's
state (messages by status, attempts by system and outcome, retries, queue depth, the oldest held item) is not
counted in the process at all: HubCollector runs a handful of bounded, indexed queries when Prometheus scrapes,
so the figures are the rows themselves and never drift.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from insights import selectors
from integrationhub.counters import INBOUND_BUDGET_FAIL_OPEN, LATENCY, REQUESTS

logger = logging.getLogger(__name__)
__all__ = ["INBOUND_BUDGET_FAIL_OPEN", "LATENCY", "REQUESTS"]

UNMATCHED = "<unmatched>"
ATTEMPT_WINDOW_SECONDS = 3600


class PrometheusMiddleware:
    """Counts every request and times it, labelled by the URL name of its view (never the raw path)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match.route) if match is not None else UNMATCHED
        method = request.method or "-"
        LATENCY.labels(view=view, method=method).observe(time.perf_counter() - started)
        REQUESTS.labels(view=view, method=method, status=str(response.status_code)).inc()
        return response


def queue_depths() -> dict[str, int | None]:
    """Messages waiting in each Celery queue: LLEN on Redis, message files on the embedded filesystem broker.
    None for a queue whose broker cannot be read right now (the scrape still answers)."""
    queues = tuple(getattr(settings, "HUB_QUEUES", ()))
    url = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
    depths: dict[str, int | None] = {}
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        try:
            client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
            with client.pipeline(transaction=False) as pipe:
                for name in queues:
                    pipe.llen(name)
                lengths = pipe.execute()
            client.close()
            return {name: int(length) for name, length in zip(queues, lengths, strict=True)}
        except redis.RedisError as exc:
            logger.warning("queue depth unavailable: %s", exc)
            return dict.fromkeys(queues)
    if url.startswith("filesystem://"):
        options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
        folder = Path(options.get("data_folder_in", ""))
        try:
            names = os.listdir(folder)
        except OSError as exc:
            logger.warning("queue depth unavailable: %s", exc)
            return dict.fromkeys(queues)
        # kombu's filesystem transport names each message <time>_<uuid>.<queue>.msg
        for name in queues:
            suffix = f".{name}.msg"
            depths[name] = sum(1 for file_name in names if file_name.endswith(suffix))
        return depths
    return dict.fromkeys(queues)


class HubCollector(Collector):
    """The hub's state at scrape time, from the database and the broker (about 7 bounded queries)."""

    def collect(self) -> Iterator[Metric]:
        messages = GaugeMetricFamily("hub_messages", "Messages stored, by status.", labels=["status"])
        for status, count in selectors.message_counts_by_status().items():
            messages.add_metric([status], count)
        yield messages

        # Attempts and retries over a sliding window: one range read of the attempts' created_at index, however
        # many attempts are kept (counting all of them at every scrape would grow with the table).
        since = timezone.now() - datetime.timedelta(seconds=ATTEMPT_WINDOW_SECONDS)
        attempts = GaugeMetricFamily(
            "hub_delivery_attempts_last_hour",
            "Delivery attempts of the last hour, by target system and outcome.",
            labels=["system", "outcome"],
        )
        for system, outcome, count in selectors.attempt_counts_by_system(since=since):
            attempts.add_metric([system, outcome], count)
        yield attempts

        retries = GaugeMetricFamily(
            "hub_delivery_retries_last_hour", "Delivery attempts of the last hour that were not a delivery's first."
        )
        retries.add_metric([], selectors.retries_total(since=since))
        yield retries

        backlog = selectors.backlog_kpi()
        waiting = GaugeMetricFamily(
            "hub_messages_waiting", "Messages waiting in the pipeline (received, mapped, validated, queued)."
        )
        waiting.add_metric([], backlog["messages_waiting"])
        yield waiting
        held = GaugeMetricFamily("hub_exception_items_open", "Open exception items (work held for a person).")
        held.add_metric([], backlog["items_held"])
        yield held
        age = GaugeMetricFamily(
            "hub_oldest_open_exception_item_age_seconds", "Age of the oldest open exception item; 0 when none."
        )
        age.add_metric([], backlog["oldest_item_age_seconds"] or 0.0)
        yield age

        depth = GaugeMetricFamily(
            "hub_celery_queue_depth", "Tasks waiting in each Celery queue (absent when unreadable).", labels=["queue"]
        )
        for queue, length in queue_depths().items():
            if length is not None:
                depth.add_metric([queue], length)
        yield depth


HUB_REGISTRY = CollectorRegistry(auto_describe=False)
HUB_REGISTRY.register(HubCollector())


def process_registry() -> Any:
    """The registry of the HTTP metrics: every worker's (multiprocess mode) or this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_exposition() -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type."""
    return generate_latest(process_registry()) + generate_latest(HUB_REGISTRY), CONTENT_TYPE_LATEST


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """HUB_METRICS_ALLOWED_NETWORKS parsed: the addresses that may scrape without an API key."""
    networks = []
    for value in getattr(settings, "HUB_METRICS_ALLOWED_NETWORKS", []):
        value = value.strip()
        if value:
            networks.append(ipaddress.ip_network(value, strict=False))
    return networks


def address_allowed(address: str | None) -> bool:
    """Whether a client address lies in one of the allowed networks."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in allowed_networks())
