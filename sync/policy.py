"""What the engine reads of its configuration: the settings every stage shares, the retry policy, and the
configuration read once per batch.

`RetryPolicy` turns a flow's sync policy into retry knobs; the settings readers (sweep period, batch sizes) are
used by the dispatcher, the pipeline, the follow-up bus and the pulls alike. The batch memo (`_batch_scope`,
`_memoized`) and the look-ups it caches (routes, the sync policy of a message, published and compiled mapping
sets) sit here rather than in the pipeline because the stages, the senders and the file drops read them too:
every other engine module may import this one, and it imports none of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Q

from governance.models import LegalEntity, SyncPolicy
from governance.selectors import sync_policy_for
from mappings.compiler import CompiledMapping
from mappings.models import MappingSet
from mappings.runtime import compiled_mapping, published_mapping_set
from sync.models import Message, Route

# Messages per pipeline task and deliveries per delivery task (HUB_DISPATCH_BATCH_SIZE, HUB_DELIVERY_BATCH_SIZE):
# a batch's fixed cost (its queries, a task, a call to a target with a batch API) is shared by more records
# the larger it is. Measured with `python -m bench events`: 100 → 500 raised delivered events/s by a quarter.
DISPATCH_BATCH_SIZE = 500
DELIVERY_BATCH_SIZE = 500


# Configuration read once per batch of messages or deliveries (routes, policies, mapping sets), instead of once
# per record: a change made while a batch runs applies from the next batch on.
_batch_memo: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("sync_batch_memo", default=None)


@contextmanager
def _batch_scope() -> Iterator[None]:
    token = _batch_memo.set({})
    try:
        yield
    finally:
        _batch_memo.reset(token)


def _memoized(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    memo = _batch_memo.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _compiled_for_batch(mapping_set_id: int) -> CompiledMapping:
    # The shared generation check (a cache read) once per batch, not once per record.
    compiled: CompiledMapping = _memoized(("compiled", mapping_set_id), lambda: compiled_mapping(mapping_set_id))
    return compiled


def _published_mapping_set(
    *, system_id: int, entity_name: str, direction: str, legal_entity_id: int | None
) -> MappingSet | None:
    return _memoized(
        ("mapping_set", system_id, entity_name, direction, legal_entity_id),
        lambda: published_mapping_set(
            system_id=system_id, entity_name=entity_name, direction=direction, legal_entity_id=legal_entity_id
        ),
    )


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def sweep_after_seconds() -> float:
    return _setting("HUB_SYNC_SWEEP_AFTER_SECONDS", 60)


def stuck_delivery_seconds() -> float:
    """How long a delivery may stay mid-call before the sweeper treats its worker as dead: past the task
    time limit, no live worker can still be in that call."""
    return _setting("HUB_SYNC_STUCK_DELIVERY_SECONDS", sweep_after_seconds() + float(settings.CELERY_TASK_TIME_LIMIT))


@dataclass(frozen=True)
class RetryPolicy:
    """The retry knobs of a flow's sync policy, or the hub's defaults when the flow has none."""

    max_attempts: int = 5
    backoff_base_seconds: float = 10
    backoff_cap_seconds: float = 3600
    jitter: bool = True

    @classmethod
    def of(cls, policy: SyncPolicy | None) -> RetryPolicy:
        if policy is None:
            return cls()
        return cls(
            # dead_letter_threshold says when a message is dead-lettered; it can only shorten max_attempts.
            max_attempts=max(1, min(policy.max_attempts, policy.dead_letter_threshold or policy.max_attempts)),
            backoff_base_seconds=policy.backoff_base_seconds,
            backoff_cap_seconds=policy.backoff_cap_seconds,
            jitter=policy.jitter,
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff (base * 2^(attempt-1), capped), spread randomly when jitter is on; never less
        than the target's Retry-After."""
        computed = min(self.backoff_cap_seconds, self.backoff_base_seconds * (2 ** max(0, attempt - 1)))
        if self.jitter:
            computed = random.uniform(0, computed)  # noqa: S311 - spreading retries, not cryptography
        return max(computed, retry_after or 0.0)


def _routes_for(message: Message) -> list[Route]:
    def load() -> list[Route]:
        routes = Route.objects.filter(source_system_id=message.system_id, entity=message.entity, active=True).filter(
            Q(legal_entity__isnull=True) | Q(legal_entity_id=message.legal_entity_id)
        )
        return list(routes.select_related("target_system").order_by("id"))

    routes = _memoized(("routes", message.system_id, message.entity, message.legal_entity_id), load)
    return [route for route in routes if not route.event_types or message.event_type in route.event_types]


def policy_for_message(message: Message, routes: list[Route] | None = None) -> SyncPolicy | None:
    """The sync policy of the first route's flow for the message's legal entity (None: hub defaults)."""
    routes = _routes_for(message) if routes is None else routes
    flow = next((route.flow for route in routes if route.flow), "")
    if not flow:
        return None
    return _memoized(
        ("policy", flow, message.legal_entity_id),
        lambda: sync_policy_for(flow=flow, legal_entity=message.legal_entity),
    )


def _system_legal_entity_id(system_id: int) -> int | None:
    def load() -> int | None:
        ids = list(LegalEntity.objects.filter(systems__id=system_id).values_list("id", flat=True)[:2])
        return ids[0] if len(ids) == 1 else None

    return _memoized(("system_legal_entity", system_id), load)
