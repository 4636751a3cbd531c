"""Selectors of the sandbox app: records, paging, credentials checks and the active fault profile."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.db.models import Max, Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from integrationhub.lookups import ids_by_key
from sandbox.models import SandboxAccessToken, SandboxFaultProfile, SandboxRecord, SandboxSetting

PROFILE_CACHE_SECONDS = 60
# How long a list's total and page boundaries are kept for the next page of the same query.
PAGE_MEMO_SECONDS = 600
PROFILE_FIELDS = (
    "system",
    "generation",
    "latency_ms",
    "error_rate",
    "error_every_nth",
    "error_status",
    "seed",
    "rate_limit_every_nth",
    "rate_limit_requests",
    "rate_limit_window_seconds",
    "retry_after_seconds",
    "burst_5xx",
    "timeout_seconds",
    "timeout_action",
    "accept_then_fail_every_nth",
    "accept_then_fail_mode",
)


def profile_cache_key(system: str) -> str:
    return f"sandbox:faults:{system}:profile"


def fault_profile_active(*, system: str) -> dict[str, Any] | None:
    """The enabled fault profile of `system` as a dict (cached), or None when the system behaves."""
    key = profile_cache_key(system)
    cached = cache.get(key)
    if cached is None:
        profile = SandboxFaultProfile.objects.filter(system=system, enabled=True).first()
        cached = (
            {"enabled": False}
            if profile is None
            else {"enabled": True, **{f: getattr(profile, f) for f in PROFILE_FIELDS}}
        )
        cache.set(key, cached, PROFILE_CACHE_SECONDS)
    return cached if cached.get("enabled") else None


def sandbox_setting_get(*, system: str) -> SandboxSetting | None:
    return SandboxSetting.objects.filter(system=system).first()


def access_token_is_valid(*, system: str, token: str) -> bool:
    """Whether `token` was issued by `system`'s token endpoint and has not expired."""
    if not token:
        return False
    return SandboxAccessToken.objects.filter(system=system, token=token, expires_at__gt=timezone.now()).exists()


def records(*, system: str, object_type: str, include_deleted: bool = False) -> QuerySet[SandboxRecord]:
    qs = SandboxRecord.objects.filter(system=system, object_type=object_type)
    return qs if include_deleted else qs.filter(deleted=False)


def record_get(
    *, system: str, object_type: str, external_id: str, include_deleted: bool = False
) -> SandboxRecord | None:
    return (
        records(system=system, object_type=object_type, include_deleted=include_deleted)
        .filter(external_id=str(external_id))
        .first()
    )


def record_by_idempotency_key(*, system: str, object_type: str, key: str) -> SandboxRecord | None:
    if not key:
        return None
    return SandboxRecord.objects.filter(system=system, object_type=object_type, idempotency_key=key).first()


def records_by_idempotency_keys(*, system: str, object_type: str, keys: list[str]) -> dict[str, SandboxRecord]:
    """The records of `system`'s `object_type` that hold any of `keys`, by key (one index probe per key)."""
    found = ids_by_key(SandboxRecord, "idempotency_key", keys, system=system, object_type=object_type)
    if not found:
        return {}
    return {record.idempotency_key: record for record in SandboxRecord.objects.filter(pk__in=found.values())}


def record_by_field(*, system: str, object_type: str, field: str, value: Any) -> SandboxRecord | None:
    """The live record whose payload has `field` == `value` (an external-id lookup)."""
    # KeyTransform, not data__<field>: custom field names (External_Id__c) contain Django's lookup separator.
    qs = records(system=system, object_type=object_type).alias(match=KeyTransform(field, "data"))
    return qs.filter(match=value).order_by("id").first()


def keyset_page(
    qs: QuerySet[SandboxRecord], *, order_column: str, tiebreak: str, after: tuple[Any, Any] | None, size: int
) -> tuple[list[SandboxRecord], bool]:
    """One page of `qs` ordered by (order_column, tiebreak) strictly after `after`; and whether more follow.

    A keyset never skips a record: one changed while a client pages moves behind the cursor and is
    returned again later (a harmless duplicate), never lost.
    """
    qs = qs.order_by(order_column, tiebreak)
    if after is not None:
        value, last = after
        qs = qs.filter(Q(**{f"{order_column}__gt": value}) | Q(**{order_column: value, f"{tiebreak}__gt": last}))
    rows = list(qs[: size + 1])
    return rows[:size], len(rows) > size


def records_signature(*, system: str, object_type: str) -> str:
    """A token that changes whenever a record of `system`'s `object_type` is created, changed or deleted:
    the newest `updated_at`, which every write of the simulated APIs stamps (deletes are soft), to the
    millisecond. One lookup at the end of the (system, object_type, updated_at) index, whatever the table
    size. Two writes in the same millisecond with a list read between them are the one change it misses.
    """
    last_change = SandboxRecord.objects.filter(system=system, object_type=object_type).aggregate(
        last_change=Max("updated_at")
    )["last_change"]
    return f"{last_change.timestamp() if last_change else 0}"


def list_memo_key(*, system: str, object_type: str, params: Mapping[str, str]) -> str:
    """The memo key of one list query (every parameter but the page number) at the records' current state."""
    query = urlencode(sorted((key, value) for key, value in params.items() if key != "page"))
    digest = hashlib.sha256(query.encode()).hexdigest()
    return f"sandbox:pages:{system}:{object_type}:{digest}:{records_signature(system=system, object_type=object_type)}"


def number_page(
    qs: QuerySet[SandboxRecord], *, page: int, per_page: int, memo_key: str = ""
) -> tuple[list[SandboxRecord], int]:
    """Page `page` (from 1) of `qs` ordered by id, and the total count. Id order keeps pages stable under updates.

    With a `memo_key` (the query and the records' signature) the total and the last id of each page served
    are cached, so page N+1 reads its rows after page N's last id instead of counting and skipping every
    row before it: a client reading a million entries page by page pays the same for the last page as
    for the first. A changed record changes the signature and with it the key, so nothing stale is served.
    """
    qs = qs.order_by("id")
    total_key, after_key = f"{memo_key}:total", f"{memo_key}:after:{page - 1}"
    memo = cache.get_many([total_key, after_key]) if memo_key else {}
    total = memo.get(total_key)
    if total is None:
        total = qs.count()
        if memo_key:
            cache.set(total_key, total, PAGE_MEMO_SECONDS)
    after = memo.get(after_key) if page > 1 else None
    if after is not None:
        rows = list(qs.filter(id__gt=after)[:per_page])
    else:
        start = (page - 1) * per_page
        rows = list(qs[start : start + per_page])
    if memo_key and rows:
        cache.set(f"{memo_key}:after:{page}", rows[-1].pk, PAGE_MEMO_SECONDS)
    return rows, total


def parse_since(value: str) -> datetime | None:
    """An ISO 8601 timestamp (naive means UTC) or None when empty; ValueError when malformed."""
    if not value:
        return None
    from dateutil.parser import isoparse

    parsed = isoparse(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
