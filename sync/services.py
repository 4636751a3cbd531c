"""The sync engine's public services: ingest once, map, validate, check ownership, hold, route, deliver
idempotently, retry, replay.

Every stage is an explicit service called by a Celery task that takes ids (sync/tasks.py). Ingest writes
the message row and nothing else; the dispatcher (beat, every second) hands stored messages to workers in
batches, and the sweeper re-dispatches anything a lost task left behind. Each stage stamps the message.

This module is a facade: it holds no logic and re-exports the services callers outside the engine use (the
workflows, insights, the API, admin, the tasks and the tests), so they keep one import path. The engine
itself is split by concern, and its modules import each other directly, never through this one:

- sync.policy       settings readers, RetryPolicy, the batch memo of routes, sync policies and mapping sets
- sync.ingest       the signed webhook (message_ingest) and messages_store_batch for pulls and file drops
- sync.dispatching  the dispatcher (sync_tick, messages/deliveries_dispatch), the sweeper, stalled batch pulls
- sync.stages       the stage functions (map, validate, ownership, hold, route) and the flow-stage registry
- sync.pipeline     message_process and messages_process: messages through the stages, one or a batch
- sync.sending      delivery_send (one record to one target) and deliveries_send (a batch, via sync.delivering)
- sync.ordering     the ordering guard: watermarks, stale updates, the per-record lock
- sync.outcome      the one decision retry / dead / rejected, cross-references, settling messages
- sync.replay       replay, release, reject a message; release a resumed target's deliveries
- sync.follow_ups   the follow-up event bus (subscribe, emit, dispatch, process)
- sync.polling      scheduled pulls: cursors, poll leases, poll schedules
- sync.file_drop    CSV file drops, all or nothing
- sync.retention    pruning payloads and old attempts
"""

from __future__ import annotations

from sync.dispatching import (
    batch_pulls_resume,
    deliveries_dispatch,
    deliveries_enqueue,
    messages_dispatch,
    messages_enqueue,
    sync_sweep,
    sync_tick,
)
from sync.file_drop import (
    FILE_FIELD,
    ROW_FIELD,
    file_drop_ingest,
    file_drop_key,
    file_drop_max_bytes,
    file_drop_max_rows,
)
from sync.follow_ups import (
    FOLLOW_UP_BATCH_SIZE,
    FOLLOW_UP_MAX_ATTEMPTS,
    follow_up_emit,
    follow_up_emit_many,
    follow_up_event_process,
    follow_up_events_dispatch,
    follow_up_events_process,
    follow_up_subscribe,
    follow_up_unsubscribe,
    subscribe,
)
from sync.ingest import (
    BIGINT,
    CANONICAL_ENTITIES,
    DEFAULT_INBOUND_RATE,
    EVENT_TYPE,
    FAIL_OPEN_LOG_SECONDS,
    LONE_SURROGATE,
    MAX_JSON_DEPTH,
    NOT_FINITE,
    SOURCE_SEQUENCE,
    STORAGE_RETRY_AFTER_SECONDS,
    SURROGATE,
    TOO_DEEP,
    IngestResult,
    entity_for_event_type,
    inbound_budget_spend,
    inbound_rate,
    inbound_system,
    inbound_systems_forget,
    max_body_bytes,
    message_ingest,
    messages_store_batch,
)
from sync.outcome import SETTLE_ROW_FIELDS, SETTLED_FIELDS, attempt_summary, messages_settle_many, terminal_item_text
from sync.pipeline import PIPELINE_FIELDS, PROCESSABLE, message_process, messages_process
from sync.policy import (
    DELIVERY_BATCH_SIZE,
    DISPATCH_BATCH_SIZE,
    RetryPolicy,
    policy_for_message,
    stuck_delivery_seconds,
    sweep_after_seconds,
)
from sync.polling import (
    POLL_QUEUE,
    POLL_TASK,
    VERSION_FIELDS,
    PollLease,
    PollResult,
    poll_lease_seconds,
    poll_lease_take,
    poll_page_store,
    poll_run,
    poll_schedule_delete,
    poll_schedule_run,
    poll_schedule_save,
    pull_idempotency_key,
    record_version,
)
from sync.replay import deliveries_release, message_reject, message_release, message_replay
from sync.retention import (
    PRUNABLE_STATUSES,
    RetentionResult,
    retention_attempt_days,
    retention_payload_days,
    retention_prune,
)
from sync.sending import deliveries_send, delivery_send
from sync.stages import (
    AMOUNT_FIELDS,
    IDENTITY_FIELDS,
    LEGAL_ENTITY_FIELDS,
    FlowStage,
    PipelineStop,
    delivery_idempotency_key,
    flow_stage_register,
    message_hold_for_approval,
)

__all__ = [
    "AMOUNT_FIELDS",
    "BIGINT",
    "CANONICAL_ENTITIES",
    "DEFAULT_INBOUND_RATE",
    "DELIVERY_BATCH_SIZE",
    "DISPATCH_BATCH_SIZE",
    "EVENT_TYPE",
    "FAIL_OPEN_LOG_SECONDS",
    "FILE_FIELD",
    "FOLLOW_UP_BATCH_SIZE",
    "FOLLOW_UP_MAX_ATTEMPTS",
    "IDENTITY_FIELDS",
    "LEGAL_ENTITY_FIELDS",
    "LONE_SURROGATE",
    "MAX_JSON_DEPTH",
    "NOT_FINITE",
    "PIPELINE_FIELDS",
    "POLL_QUEUE",
    "POLL_TASK",
    "PROCESSABLE",
    "PRUNABLE_STATUSES",
    "ROW_FIELD",
    "SETTLED_FIELDS",
    "SETTLE_ROW_FIELDS",
    "SOURCE_SEQUENCE",
    "STORAGE_RETRY_AFTER_SECONDS",
    "SURROGATE",
    "TOO_DEEP",
    "VERSION_FIELDS",
    "FlowStage",
    "IngestResult",
    "PipelineStop",
    "PollLease",
    "PollResult",
    "RetentionResult",
    "RetryPolicy",
    "attempt_summary",
    "batch_pulls_resume",
    "deliveries_dispatch",
    "deliveries_enqueue",
    "deliveries_release",
    "deliveries_send",
    "delivery_idempotency_key",
    "delivery_send",
    "entity_for_event_type",
    "file_drop_ingest",
    "file_drop_key",
    "file_drop_max_bytes",
    "file_drop_max_rows",
    "flow_stage_register",
    "follow_up_emit",
    "follow_up_emit_many",
    "follow_up_event_process",
    "follow_up_events_dispatch",
    "follow_up_events_process",
    "follow_up_subscribe",
    "follow_up_unsubscribe",
    "inbound_budget_spend",
    "inbound_rate",
    "inbound_system",
    "inbound_systems_forget",
    "max_body_bytes",
    "message_hold_for_approval",
    "message_ingest",
    "message_process",
    "message_reject",
    "message_release",
    "message_replay",
    "messages_dispatch",
    "messages_enqueue",
    "messages_process",
    "messages_settle_many",
    "messages_store_batch",
    "policy_for_message",
    "poll_lease_seconds",
    "poll_lease_take",
    "poll_page_store",
    "poll_run",
    "poll_schedule_delete",
    "poll_schedule_run",
    "poll_schedule_save",
    "pull_idempotency_key",
    "record_version",
    "retention_attempt_days",
    "retention_payload_days",
    "retention_prune",
    "stuck_delivery_seconds",
    "subscribe",
    "sweep_after_seconds",
    "sync_sweep",
    "sync_tick",
    "terminal_item_text",
]
