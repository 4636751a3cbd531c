"""The run and step bookkeeping every workflow shares: start a run once per business key, record each step's
state and timing, hold a run on an exception item, finish it. Flows call these; KPIs and traces read the rows.

A step reaches a connected system only through `workflow_call`, which hands the call to the transport (pause,
circuit breaker, rate budget, the flow's timeout, the run's correlation id, one attempt row per call). A step
that failed retryably is tried again after the delay the flow's sync policy sets (`workflow_retry_delay`).
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from connectors.base import OPERATIONS, Connector
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import registry
from exception_queue.models import ExceptionItem
from governance.models import SyncPolicy
from governance.selectors import sync_policy_for
from integrationhub.logging import new_correlation_id
from sync import transport
from workflows.choices import FINISHED_RUN_STATUSES, RunStatus, StepStatus
from workflows.models import WorkflowRun, WorkflowStep

T = TypeVar("T")

logger = logging.getLogger(__name__)


def workflow_run_start(
    *,
    flow: str,
    business_key: str,
    legal_entity: Any = None,
    message: Any = None,
    correlation_id: str = "",
    context: Mapping[str, Any] | None = None,
    amount: Decimal | None = None,
    currency: str = "",
    triggered_at: datetime.datetime | None = None,
) -> tuple[WorkflowRun, bool]:
    """The run of `flow` for `business_key`, created on the first trigger; a repeated trigger (a webhook sent
    twice, a pull that reads the record again) returns the existing run and False, so nothing runs twice."""
    existing = WorkflowRun.objects.filter(flow=flow, business_key=business_key).first()
    if existing is not None:
        return existing, False
    run = WorkflowRun(
        flow=flow,
        business_key=business_key[:200],
        legal_entity=legal_entity,
        message=message,
        # A run without a message (a milestone, a person's request) gets its own: its calls are traced by it.
        correlation_id=correlation_id or getattr(message, "correlation_id", "") or new_correlation_id(),
        context=dict(context or {}),
        amount=amount,
        currency=currency[:3],
        triggered_at=triggered_at or timezone.now(),
    )
    run.full_clean(exclude=["legal_entity", "message"])
    try:
        with transaction.atomic():
            run.save()
    except IntegrityError:
        # Two workers started the same run at once; the other one won and owns it.
        return WorkflowRun.objects.get(flow=flow, business_key=business_key), False
    return run, True


def workflow_step_begin(*, run: WorkflowRun, name: str, position: int) -> WorkflowStep:
    """Mark step `name` running (created on first use) and count the attempt; the run points at it."""
    now = timezone.now()
    step, _ = WorkflowStep.objects.get_or_create(run=run, name=name, defaults={"position": position})
    step.status = StepStatus.RUNNING
    step.attempts += 1
    step.started_at = now
    step.finished_at = None
    step.error = ""
    step.save(update_fields=["status", "attempts", "started_at", "finished_at", "error"])
    if run.current_step != name or run.status != RunStatus.RUNNING:
        run.current_step = name
        run.status = RunStatus.RUNNING
        run.save(update_fields=["current_step", "status", "updated_at"])
    return step


def workflow_step_done(
    *, step: WorkflowStep, result: Mapping[str, Any] | None = None, status: str = StepStatus.DONE
) -> WorkflowStep:
    """Record a step as done (or skipped) with what it produced; the result is merged into the run's context."""
    step.status = status
    step.finished_at = timezone.now()
    step.result = dict(result or {})
    step.error = ""
    step.save(update_fields=["status", "finished_at", "result", "error"])
    if result:
        run = step.run
        run.context = {**(run.context or {}), **dict(result)}
        run.save(update_fields=["context", "updated_at"])
    return step


def workflow_step_fail(*, step: WorkflowStep, error: str) -> WorkflowStep:
    """Record a step's failure; the caller decides whether the run is held or retried."""
    step.status = StepStatus.FAILED
    step.finished_at = timezone.now()
    step.error = error[:4000]
    step.save(update_fields=["status", "finished_at", "error"])
    run = step.run
    run.last_error = step.error
    run.save(update_fields=["last_error", "updated_at"])
    return step


@transaction.atomic
def workflow_run_hold(
    *,
    run: WorkflowRun,
    category: str,
    reason: str,
    step: str = "",
    status: str = RunStatus.HELD,
    **item_fields: Any,
) -> ExceptionItem:
    """Hold `run` (held at a step, or awaiting approval) on an exception item that names the step and why."""
    from exception_queue.services import exception_item_open

    run.status = status
    run.current_step = step or run.current_step
    run.last_error = reason[:4000]
    run.save(update_fields=["status", "current_step", "last_error", "updated_at"])
    item_fields.setdefault("message", run.message)
    item_fields.setdefault("legal_entity", run.legal_entity)
    item_fields.setdefault("amount", run.amount)
    item_fields.setdefault("currency", run.currency)
    return exception_item_open(
        category=category, reason=reason, flow=run.flow, workflow_run=run, step=step, **item_fields
    )


def workflow_run_finish(*, run: WorkflowRun, status: str = RunStatus.COMPLETED) -> WorkflowRun:
    """Close `run` with a final status and its finish time (the end of the flow's KPI)."""
    if status not in FINISHED_RUN_STATUSES:
        raise ValueError(f"{status!r} is not a final run status; use one of {', '.join(FINISHED_RUN_STATUSES)}.")
    run.status = status
    run.finished_at = timezone.now()
    run.current_step = "" if status == RunStatus.COMPLETED else run.current_step
    run.save(update_fields=["status", "finished_at", "current_step", "updated_at"])
    return run


def workflow_run_resume(*, run: WorkflowRun) -> WorkflowRun:
    """Put a held (or finished, for a later update of the same record) run back to running; the caller then
    hands it to a worker, which carries on from the first step that is not done."""
    run.status = RunStatus.RUNNING
    run.finished_at = None
    run.last_error = ""
    run.save(update_fields=["status", "finished_at", "last_error", "updated_at"])
    return run


def workflow_run_wait(*, run: WorkflowRun, step: str, reason: str) -> WorkflowRun:
    """Hold `run` at `step` while another record's exception item is worked (no item of its own)."""
    run.status = RunStatus.HELD
    run.current_step = step
    run.last_error = reason[:4000]
    run.save(update_fields=["status", "current_step", "last_error", "updated_at"])
    return run


# How long a run's lease lasts without a heartbeat: a worker killed mid-run frees its run this long after its
# last renewal, while a live worker renews it (every third of the period) for as long as its steps take.
RUN_LEASE_SECONDS = 60


@contextmanager
def workflow_run_lock(*, run_id: int) -> Iterator[bool]:
    """One worker at a time per run, across processes (the shared cache); yields False when another holds it.

    A lease, not a lock for a fixed time: taken for RUN_LEASE_SECONDS and renewed by a heartbeat thread while
    the holder works, so a long run keeps it and a killed worker (whose heartbeat dies with it) frees the run
    within one lease instead of holding it for the longest a run could ever take."""
    key, token = f"workflows:run-lock:{run_id}", uuid.uuid4().hex
    seconds = RUN_LEASE_SECONDS
    if not cache.add(key, token, timeout=seconds):
        yield False
        return
    working = threading.Event()
    heartbeat = threading.Thread(
        target=_run_lease_renew, args=(key, token, seconds, working), name=f"run-lease-{run_id}", daemon=True
    )
    heartbeat.start()
    try:
        yield True
    finally:
        working.set()
        heartbeat.join(timeout=seconds)
        if cache.get(key) == token:
            cache.delete(key)


def _run_lease_renew(key: str, token: str, seconds: float, done: threading.Event) -> None:
    """Renew the lease every third of its period until the holder is done; a lease found taken by another
    (this one expired: the process was stopped longer than a period) is left to its new holder."""
    while not done.wait(seconds / 3):
        try:
            if cache.get(key) != token:
                return
            cache.touch(key, seconds)
        except Exception:  # the cache away for a moment: the next beat tries again
            logger.warning("renewing a workflow run lease failed", exc_info=True, extra={"key": key})


# --- calls to the systems ------------------------------------------------------------------------------


def workflow_run_policy(*, run: WorkflowRun) -> SyncPolicy | None:
    """The sync policy of the run's flow for its legal entity (the flow's enterprise-wide one as fallback)."""
    return sync_policy_for(flow=run.flow, legal_entity=run.legal_entity)


def workflow_run_correlation_id(*, run: WorkflowRun) -> str:
    """The run's correlation id; a run stored before every run had one gets it now, so its calls are traced."""
    if not run.correlation_id:
        run.correlation_id = new_correlation_id()
        WorkflowRun.objects.filter(pk=run.pk, correlation_id="").update(correlation_id=run.correlation_id)
    return run.correlation_id


def connector_offers(system: ConnectedSystem, operation: str) -> bool:
    """Whether the connector type of `system` has `operation` (a declared capability or a method of its own),
    known without a call, so a step refuses what the system cannot do before anything is sent."""
    cls = registry.get(system.connector_type)
    if operation in OPERATIONS:
        return cls.supports(operation)
    return callable(getattr(cls, operation, None))


def flow_call(
    system: ConnectedSystem,
    operation: str,
    call: Callable[[Connector], T],
    *,
    flow: str,
    step: str,
    correlation_id: str = "",
    sync_policy: SyncPolicy | None = None,
    entity: str = "",
    key: str = "",
    context: Mapping[str, Any] | None = None,
) -> T:
    """One call of a flow to `system` through the transport, for work that has no run of its own (a pull, a
    person's request, a batch of time and expense lines): refused without a call (a retryable
    SystemUnavailableError) while the system is paused, its circuit open or its rate budget spent; otherwise
    made within the policy's timeout with `correlation_id` in its header, and recorded as one attempt row whose
    summary names the flow, the step and `context`."""
    return transport.connector_call(
        system,
        operation,
        call,
        correlation_id=correlation_id,
        sync_policy=sync_policy,
        entity=entity,
        key=key,
        context={"flow": flow, "step": step, **dict(context or {})},
    )


def workflow_call(
    run: WorkflowRun,
    system: ConnectedSystem,
    operation: str,
    call: Callable[[Connector], T],
    *,
    step: str,
    entity: str = "",
    key: str = "",
    correlation_id: str = "",
    sync_policy: SyncPolicy | None = None,
) -> T:
    """One call of a step of `run` to `system` (`flow_call` with the run's policy, its correlation id, and the
    run and its message named in the attempt row). `correlation_id` is the caller's when the step works for
    another flow's run (the saga ensuring its client)."""
    return flow_call(
        system,
        operation,
        call,
        flow=run.flow,
        step=step,
        correlation_id=correlation_id or workflow_run_correlation_id(run=run),
        sync_policy=sync_policy if sync_policy is not None else workflow_run_policy(run=run),
        entity=entity,
        key=key,
        context={"workflow_run": run.pk, "message_id": run.message_id},
    )


def workflow_retry_delay(*, run_id: int, attempt: int, error: Exception) -> float | None:
    """Seconds until a step that failed with `error` on automatic attempt `attempt` runs again, from the sync
    policy of the run's flow (its backoff and jitter, never sooner than the target's Retry-After); None when the
    error is not retryable or the policy's max attempts are spent, and a person takes over."""
    from sync.services import RetryPolicy

    run = WorkflowRun.objects.select_related("legal_entity").filter(pk=run_id).first()
    if run is None or not (isinstance(error, ConnectorError) and error.retryable):
        return None
    policy = RetryPolicy.of(workflow_run_policy(run=run))
    if attempt >= policy.max_attempts:
        return None
    return policy.delay(attempt, error.retry_after)
