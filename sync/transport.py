"""The transport: the one module that calls connector operations to deliver a record.

Record identity lives here. A record's identity at a target is (target system, entity, canonical id): the
first delivery creates it, and every later delivery of the same record updates the record the
cross-reference points at. When no cross-reference exists yet because an answer was lost, the record is
looked up first by the delivery's own key, then by the keys of the record's earlier deliveries that may have
landed, and is updated when found. A create is sent only when none of that finds it. A target that cannot
change a record once it exists says so (`Connector.updates`), and the outcome is an exception item, never a
second create. A target that no longer has the record answers "gone", and a person decides.

The transport is also the only place that builds a system's connector (`connector_for`): every other module
hands it the system. `record_deliver`, `records_deliver_batch` and `records_post` make HTTP calls and nothing
else, under the flow's timeout and with the correlation id header; they never touch the database, so the batch
path can run them on its helper threads. Their callers (per-record `sync.sending`, batched `sync.delivering`
and `sync.batch`) pass the gate first (`system_gate`: pause, circuit breaker, the shared rate budget), load the
cross-references, and record one attempt row per delivery and the circuit's count from the outcomes.

`connector_call` is the whole spine for a call that has no delivery row (a workflow step's call, a pull, a
health check): pause check, circuit breaker, the shared rate budget, the sync policy's timeout, the
correlation id header, and one attempt row per call, which the KPIs, the trace and /metrics read. A caller that
makes such a call on a helper thread (the batch path's page reads) splits it: `call_open` passes the gate on
its own thread, `GatedCall.run` makes the call on the helper thread, `GatedCall.close` records it back on the
caller's thread.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db.models import Max
from django.utils import timezone

from connectors.base import ChangeBatch, Connector, HealthResult, UpsertResult
from connectors.choices import SystemState
from connectors.http import (
    ConnectorError,
    RetryableConnectorError,
    TargetRecordGoneError,
    TerminalConnectorError,
    call_timeout,
)
from connectors.models import ConnectedSystem
from connectors.registry import connector_for
from integrationhub.errors import HubError
from integrationhub.logging import bind_correlation_id, current_correlation_id, new_correlation_id
from sync import circuit
from sync.choices import AttemptOutcome
from sync.models import DeliveryAttempt
from sync.ratelimit import rate_budget_wait

T = TypeVar("T")

logger = logging.getLogger(__name__)

UPDATE = "update"
FIND = "find"
UPSERT = "upsert"
BATCH = "upsert_batch"
FETCH_CHANGES = "fetch_changes"
SUCCESS = (AttemptOutcome.DELIVERED, AttemptOutcome.ALREADY_APPLIED)


@dataclass
class CallOutcome:
    """What one delivery's call came to: the attempt row and the delivery's next state are written from it."""

    outcome: str
    external_id: str = ""
    status_code: int | None = None
    error: str = ""
    retry_after: float | None = None
    operation: str = UPSERT
    # The target no longer has the record the cross-reference names: re-create or skip, a person decides.
    gone: bool = False
    # The record exists at the target and the target cannot change it: a person corrects it there.
    cannot_update: bool = False

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS


@dataclass(frozen=True)
class RecordCall:
    """One record to deliver: its payload and key, the id the target gave it earlier (from the
    cross-reference), whether this key may have reached the target already, and the keys of the record's
    earlier deliveries that may have landed without an answer."""

    payload: dict[str, Any]
    key: str
    external_id: str = ""
    may_exist: bool = False
    earlier_keys: tuple[str, ...] = field(default_factory=tuple)


@contextmanager
def call_scope(*, correlation_id: str = "", timeout_seconds: float | None = None) -> Iterator[None]:
    """Calls made within carry `correlation_id` in their header and obey the flow's timeout."""
    previous = current_correlation_id()
    if correlation_id:
        bind_correlation_id(correlation_id)
    try:
        with call_timeout(timeout_seconds):
            yield
    finally:
        bind_correlation_id(previous)


def outcome_of_error(exc: Exception, operation: str, *, external_id: str = "") -> CallOutcome:
    """A failed call classified once: retryable (timeouts, 5xx, 429), terminal (other 4xx), gone (404 on an
    update), or a person's to act on (capability missing, credentials not set)."""
    if isinstance(exc, TargetRecordGoneError):
        return CallOutcome(
            AttemptOutcome.TERMINAL_ERROR,
            external_id=external_id,
            status_code=exc.status_code or 404,
            error=exc.detail,
            operation=operation,
            gone=True,
        )
    if isinstance(exc, ConnectorError):
        outcome = AttemptOutcome.RETRYABLE_ERROR if exc.retryable else AttemptOutcome.TERMINAL_ERROR
        return CallOutcome(
            outcome, status_code=exc.status_code, error=exc.detail, retry_after=exc.retry_after, operation=operation
        )
    if isinstance(exc, HubError):
        return CallOutcome(AttemptOutcome.TERMINAL_ERROR, error=exc.detail, operation=operation)
    # An unexpected failure: maybe transient, and the retry budget bounds it.
    logger.exception("unexpected error calling a connector", extra={"operation": operation})
    return CallOutcome(AttemptOutcome.RETRYABLE_ERROR, error=f"{type(exc).__name__}: {exc}"[:500], operation=operation)


def _cannot_update(connector: Connector, entity: str, external_id: str) -> CallOutcome:
    slug = getattr(connector.system, "slug", "?")
    return CallOutcome(
        AttemptOutcome.TERMINAL_ERROR,
        external_id=external_id,
        error=(
            f"{slug} already holds this {entity} as {external_id} and cannot change a {entity} once it is "
            "created; the hub did not create a second one."
        ),
        operation=UPDATE,
        cannot_update=True,
    )


def _update(connector: Connector, entity: str, external_id: str, payload: dict[str, Any]) -> CallOutcome:
    if not connector.updates(entity):
        return _cannot_update(connector, entity, external_id)
    try:
        result = connector.update(entity, external_id, payload)
    except Exception as exc:  # noqa: BLE001 - classified into the outcome
        return outcome_of_error(exc, UPDATE, external_id=external_id)
    return CallOutcome(
        AttemptOutcome.DELIVERED, external_id=str(result.external_id or external_id), status_code=200, operation=UPDATE
    )


def _connector(target: Connector | ConnectedSystem) -> Connector:
    """The system's connector, built here (its credentials decrypted), or the connector given (the benchmarks
    time a connector built once)."""
    return target if isinstance(target, Connector) else connector_for(target)


def connector_supports(system: ConnectedSystem, operation: str) -> bool:
    """Whether the system's connector offers `operation` (a method of its class), without calling anything."""
    return callable(getattr(type(connector_for(system)), operation, None))


def batches(system: ConnectedSystem, entity: str) -> bool:
    """Whether the system takes many records of `entity` in one call (`upsert_batch`)."""
    try:
        connector = connector_for(system)
        return connector.supports("upsert_batch") and connector.batches(entity)
    except HubError:  # not configured for this entity: the one-by-one call reports it
        return False


def record_deliver(
    system: ConnectedSystem,
    entity: str,
    call: RecordCall,
    *,
    correlation_id: str = "",
    timeout_seconds: float | None = None,
) -> CallOutcome:
    """One delivery's call (`record_send`) to the system, under the flow's timeout and with the correlation id
    header; credentials that cannot be read are an outcome like a failed call."""
    with call_scope(correlation_id=correlation_id, timeout_seconds=timeout_seconds):
        try:
            connector = connector_for(system)
        except Exception as exc:  # noqa: BLE001 - classified like a failed call
            return outcome_of_error(exc, UPSERT)
        return record_send(connector, entity, call)


def records_deliver_batch(
    system: ConnectedSystem,
    entity: str,
    calls: Sequence[RecordCall],
    *,
    correlation_id: str = "",
    timeout_seconds: float | None = None,
) -> list[CallOutcome]:
    """A group of deliveries' call (`records_send_batch`) to the system, under the flow's timeout and with the
    correlation id header; credentials that cannot be read are every delivery's outcome."""
    with call_scope(correlation_id=correlation_id, timeout_seconds=timeout_seconds):
        try:
            connector = connector_for(system)
        except HubError as exc:  # a person must act
            return [outcome_of_error(exc, BATCH)] * len(calls)
        return records_send_batch(connector, entity, calls)


def records_post(
    system: ConnectedSystem,
    entity: str,
    payloads: Sequence[tuple[dict[str, Any], str]],
    *,
    may_exist: bool = True,
    external_ids: Sequence[str] | None = None,
    correlation_id: str = "",
    timeout_seconds: float | None = None,
) -> list[UpsertResult | ConnectorError]:
    """The batch path's posting call (`records_post_many`) to the system, under the flow's timeout and with the
    correlation id header. HTTP only (the batch path runs it on a helper thread)."""
    with call_scope(correlation_id=correlation_id, timeout_seconds=timeout_seconds):
        return records_post_many(system, entity, payloads, may_exist=may_exist, external_ids=external_ids)


def record_send(target: Connector | ConnectedSystem, entity: str, call: RecordCall) -> CallOutcome:
    """Deliver one record: update it where the target already has it, else create it once."""
    connector = _connector(target)
    if call.external_id and connector.record_identity:
        return _update(connector, entity, call.external_id, call.payload)
    operation = FIND
    try:
        if (call.may_exist or call.earlier_keys) and connector.supports("find"):
            for candidate in (call.key, *call.earlier_keys) if call.may_exist else call.earlier_keys:
                found = connector.find(entity, candidate)
                if not found:
                    continue
                found_id = str(found.get("id") or found.get("external_id") or "")
                if candidate == call.key or not connector.record_identity:
                    # This very delivery's create landed and its answer was lost.
                    return CallOutcome(AttemptOutcome.ALREADY_APPLIED, external_id=found_id, operation=FIND)
                # An earlier delivery of the record landed without an answer: this one updates it.
                return _update(connector, entity, found_id, call.payload)
        operation = UPSERT
        result = connector.upsert(entity, call.payload, call.key)
    except Exception as exc:  # noqa: BLE001 - classified into the outcome
        return outcome_of_error(exc, operation)
    return CallOutcome(AttemptOutcome.DELIVERED, external_id=str(result.external_id), operation=UPSERT)


def records_post_many(
    target: Connector | ConnectedSystem,
    entity: str,
    payloads: Sequence[tuple[dict[str, Any], str]],
    *,
    may_exist: bool = True,
    external_ids: Sequence[str] | None = None,
) -> list[UpsertResult | ConnectorError]:
    """The batch path's call: entries the target already holds (an `external_ids` entry from the
    cross-reference) are updated one by one, the others go in one batch call (`upsert_many` or `upsert_batch`)
    or one upsert each. Answers one result or refusal per entry, in order; a failed call of the whole batch (or
    a retryable failure of one upsert) raises. `may_exist`: some entry may have reached the target before."""
    connector = _connector(target)
    if external_ids and any(external_ids):
        answers: list[UpsertResult | ConnectorError | None] = [None] * len(payloads)
        new: list[int] = []
        for position, ((payload, key), external_id) in enumerate(zip(payloads, external_ids, strict=True)):
            if not external_id:
                new.append(position)
                continue
            outcome = record_send(connector, entity, RecordCall(payload=payload, key=key, external_id=external_id))
            answers[position] = _as_answer(outcome, connector)
        if new:
            created = records_post_many(connector, entity, [payloads[p] for p in new], may_exist=may_exist)
            for position, answer in zip(new, created, strict=True):
                answers[position] = answer
        return [answer for answer in answers if answer is not None]
    upsert_many = getattr(connector, "upsert_many", None)
    if upsert_many is not None:
        return list(upsert_many(entity, payloads, may_exist=may_exist))
    if connector.supports("upsert_batch") and connector.batches(entity):
        return list(connector.upsert_batch(entity, payloads, may_exist=may_exist))  # type: ignore[arg-type]
    results: list[UpsertResult | ConnectorError] = []
    for payload, key in payloads:
        try:
            results.append(connector.upsert(entity, payload, key))
        except ConnectorError as exc:
            if exc.retryable:
                raise
            results.append(exc)
    return results


def _as_answer(outcome: CallOutcome, connector: Connector) -> UpsertResult | ConnectorError:
    """A transport outcome in the shape of a batch answer."""
    slug = getattr(connector.system, "slug", "")
    if outcome.succeeded:
        return UpsertResult(external_id=outcome.external_id, created=False, payload={"operation": outcome.operation})
    if outcome.gone:
        return TargetRecordGoneError(outcome.error, status_code=outcome.status_code, system_slug=slug)
    if outcome.outcome == AttemptOutcome.RETRYABLE_ERROR:
        return RetryableConnectorError(
            outcome.error, status_code=outcome.status_code, system_slug=slug, retry_after=outcome.retry_after
        )
    return TerminalConnectorError(outcome.error, status_code=outcome.status_code, system_slug=slug)


def health_check(system: ConnectedSystem) -> HealthResult:
    """A connection test: the system's health check with a correlation id in its header (no attempt row: a
    test is not traffic, and the KPIs count traffic)."""
    with call_scope(correlation_id=current_correlation_id() or new_correlation_id()):
        return connector_for(system).health_check()


def changes_fetch(target: Connector | ConnectedSystem, entity: str, cursor: str | None) -> ChangeBatch:
    """One page of changed records, HTTP only (a benchmark's direct read; the batch path reads its pages through
    `call_open`, on a helper thread)."""
    return _connector(target).fetch_changes(entity, cursor)


def batch_answer_outcome(result: UpsertResult | Exception | CallOutcome) -> CallOutcome:
    """One item of a batch call's answer as an outcome."""
    if isinstance(result, CallOutcome):
        return result
    if isinstance(result, UpsertResult):
        outcome = AttemptOutcome.DELIVERED if result.created else AttemptOutcome.ALREADY_APPLIED
        return CallOutcome(
            outcome, external_id=str(result.external_id), status_code=201 if result.created else 200, operation=BATCH
        )
    return outcome_of_error(result, BATCH)


def records_send_batch(
    target: Connector | ConnectedSystem, entity: str, calls: Sequence[RecordCall]
) -> list[CallOutcome]:
    """Deliver many records of one entity: those the target holds are updated one by one, the new ones go in
    one `upsert_batch` call (looked up first where any may exist). Outcomes in the order of `calls`; a failure
    of the whole batch call is every new record's outcome."""
    connector = _connector(target)
    outcomes: list[CallOutcome | None] = [None] * len(calls)
    creates: list[int] = []
    for position, call in enumerate(calls):
        if call.external_id and connector.record_identity:
            outcomes[position] = _update(connector, entity, call.external_id, call.payload)
        elif call.earlier_keys:
            outcomes[position] = record_send(connector, entity, call)
        else:
            creates.append(position)
    if creates:
        try:
            answers: list[Any] = list(
                connector.upsert_batch(
                    entity,
                    [(calls[p].payload, calls[p].key) for p in creates],
                    may_exist=any(calls[p].may_exist for p in creates),
                )
            )
        except Exception as exc:  # noqa: BLE001 - classified into every created record's outcome
            failure = outcome_of_error(exc, BATCH)
            answers = [failure] * len(creates)
        for position, answer in zip(creates, answers, strict=True):
            outcomes[position] = batch_answer_outcome(answer)
    return [outcome for outcome in outcomes if outcome is not None]


class SystemUnavailableError(RetryableConnectorError):
    """The call was not made: the system is paused, its circuit is open or its rate budget is spent. Nothing
    reached it, so no attempt is counted; the caller tries again after `retry_after` (or on resume)."""

    code = "system_unavailable"
    title = "The system cannot be called now"

    PAUSED = "paused"
    CIRCUIT_OPEN = "circuit_open"
    RATE_LIMITED = "rate_limited"

    def __init__(self, detail: str, *, reason: str = "", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        # Which gate refused: a paused system waits for a person, the others for `retry_after`.
        self.reason = reason


def policy_timeout(sync_policy: Any) -> float | None:
    """The call timeout a flow's sync policy sets (None: the system's own `timeout_seconds`)."""
    seconds = getattr(sync_policy, "timeout_seconds", None)
    return float(seconds) if seconds else None


def policy_rate(system: ConnectedSystem, sync_policy: Any) -> float:
    """Calls per second for this flow: the system's shared budget, or less where the flow's policy asks."""
    rate = float(system.rate_limit_per_second)
    flow_rate = getattr(sync_policy, "rate_limit_per_second", None)
    return min(rate, float(flow_rate)) if flow_rate else rate


def system_state_refresh(system: ConnectedSystem) -> ConnectedSystem:
    """The system with its state as stored now (a person may have paused it since it was read), for a caller
    that holds the instance across many calls."""
    state = ConnectedSystem.objects.filter(pk=system.pk).values_list("state", flat=True).first()
    if state is not None:
        system.state = state
    return system


def system_gate(system: ConnectedSystem, sync_policy: Any = None) -> None:
    """Refuse (SystemUnavailableError) a call to a paused system, one whose circuit is open, or one whose rate
    budget is spent for longer than a short wait."""
    if system.state == SystemState.PAUSED:
        raise SystemUnavailableError(
            f"{system.slug} is paused; the call waits until an integration admin resumes it.",
            system_slug=system.slug,
            hint="Resume the system in the admin when it is ready.",
            reason=SystemUnavailableError.PAUSED,
        )
    gate = circuit.circuit_gate(system=system)
    if not gate.allowed:
        retry_at = gate.retry_at or time.time() + 1
        raise SystemUnavailableError(
            f"The circuit of {system.slug} is open after repeated failures; it is tried again at "
            f"{datetime.datetime.fromtimestamp(retry_at, tz=datetime.UTC):%H:%M:%S} UTC.",
            system_slug=system.slug,
            retry_after=max(1.0, retry_at - time.time()),
            reason=SystemUnavailableError.CIRCUIT_OPEN,
        )
    budget = rate_budget_wait(system_key=f"{system.slug}:{system.pk}", rate_per_second=policy_rate(system, sync_policy))
    if not budget.allowed:
        raise SystemUnavailableError(
            f"The rate budget of {system.slug} is spent; the call waits {budget.wait_seconds:.1f} s.",
            system_slug=system.slug,
            retry_after=budget.wait_seconds,
            reason=SystemUnavailableError.RATE_LIMITED,
        )


def connector_call(
    system: ConnectedSystem,
    operation: str,
    call: Callable[[Connector], T],
    *,
    correlation_id: str = "",
    sync_policy: Any = None,
    entity: str = "",
    key: str = "",
    context: Mapping[str, Any] | None = None,
) -> T:
    """Run `call(connector)` against `system` through the spine: the gate (pause, circuit, rate budget), the
    policy's timeout, the correlation id header, one attempt row and the circuit's count. Returns what the call
    returns; re-raises its error after recording it."""
    gated = call_open(
        system,
        operation,
        correlation_id=correlation_id,
        sync_policy=sync_policy,
        entity=entity,
        key=key,
        context=context,
    )
    try:
        return gated.run(call)
    finally:
        gated.close()


@dataclass
class GatedCall:
    """A call that passed the gate (`call_open`): `run` makes it (on any thread: no database), `close` records
    its attempt row and its effect on the circuit (on the thread that opened it)."""

    system: ConnectedSystem
    operation: str
    correlation_id: str
    timeout_seconds: float | None
    entity: str = ""
    key: str = ""
    context: Mapping[str, Any] | None = None
    duration_ms: float = 0.0
    error: Exception | None = None
    ran: bool = False
    closed: bool = False

    def run(self, call: Callable[[Connector], T]) -> T:
        """`call(connector)` under the policy's timeout and with the correlation id header; its error re-raised
        after it is kept for the attempt row."""
        started = time.perf_counter()
        try:
            with call_scope(correlation_id=self.correlation_id, timeout_seconds=self.timeout_seconds):
                return call(connector_for(self.system))
        except Exception as exc:
            self.error = exc
            raise
        finally:
            self.ran = True
            self.duration_ms = round((time.perf_counter() - started) * 1000, 1)

    def close(self) -> None:
        """One attempt row for the call and its count in the circuit (once; nothing for a call never made)."""
        if self.closed or not self.ran:
            return
        self.closed = True
        if self.error is None:
            outcome = CallOutcome(AttemptOutcome.DELIVERED, operation=self.operation)
        else:
            outcome = outcome_of_error(self.error, self.operation)
        _call_record(
            self.system,
            outcome,
            self.duration_ms,
            self.correlation_id,
            entity=self.entity,
            key=self.key,
            context=self.context,
        )


def call_open(
    system: ConnectedSystem,
    operation: str,
    *,
    correlation_id: str = "",
    sync_policy: Any = None,
    entity: str = "",
    key: str = "",
    context: Mapping[str, Any] | None = None,
) -> GatedCall:
    """Pass the gate (SystemUnavailableError: paused, circuit open, rate budget spent) for one call with no
    delivery row; the call to `run` and then `close`."""
    system_gate(system, sync_policy)
    return GatedCall(
        system=system,
        operation=operation,
        correlation_id=correlation_id or current_correlation_id() or "",
        timeout_seconds=policy_timeout(sync_policy),
        entity=entity,
        key=key,
        context=context,
    )


def _call_record(
    system: ConnectedSystem,
    outcome: CallOutcome,
    duration_ms: float,
    correlation_id: str,
    *,
    entity: str,
    key: str,
    context: Mapping[str, Any] | None,
) -> None:
    """One attempt row for a call with no delivery, numbered per (correlation id, system, operation, key), and
    the call's effect on the system's circuit (a refusal with a status code says the system is up)."""
    number = (
        DeliveryAttempt.objects.filter(
            delivery__isnull=True,
            system=system,
            correlation_id=correlation_id,
            request_summary__operation=outcome.operation,
            request_summary__idempotency_key=key,
        ).aggregate(last=Max("number"))["last"]
        or 0
    ) + 1
    DeliveryAttempt.objects.create(
        delivery=None,
        system=system,
        number=number,
        request_summary={
            "target": system.slug,
            "operation": outcome.operation,
            "entity": entity,
            "idempotency_key": key,
            **dict(context or {}),
        },
        status_code=outcome.status_code,
        duration_ms=duration_ms,
        outcome=outcome.outcome,
        error=outcome.error[:2000],
        correlation_id=correlation_id[:64],
        created_at=timezone.now(),
    )
    if outcome.succeeded or (outcome.outcome == AttemptOutcome.TERMINAL_ERROR and outcome.status_code is not None):
        circuit.circuit_record_success(system=system)
    elif outcome.outcome == AttemptOutcome.RETRYABLE_ERROR:
        circuit.circuit_record_failure(system=system)
