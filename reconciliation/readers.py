"""Paged reads of what the PSA and the ERP hold now, through the transport (one attempt row per page).

A reconciliation reads the counterparts themselves, not the hub's ledger: an entry edited or deleted directly in
the ERP, or approved in the PSA without ever reaching the hub, shows up as a difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from connectors.base import ChangeBatch, Connector
from connectors.models import ConnectedSystem
from integrationhub.errors import HubError
from sync.transport import connector_call, connector_supports

LIST_OPERATION = "list_records"
# Pages as large as the counterparts allow: a month of 10,000 entries is a handful of calls.
PSA_PAGE_SIZE = 2000
ERP_PAGE_SIZE = 1000
TRYTON_PAGE_SIZE = 2000
# A runaway cursor (a counterpart answering has_more for ever) stops here instead of looping.
MAX_PAGES = 10_000


class ListingUnsupportedError(HubError):
    """The system's connector cannot list records, so it cannot be reconciled."""

    status = 501
    code = "reconciliation_unsupported"
    title = "This system cannot be reconciled"


def listing_check(system: ConnectedSystem) -> None:
    """Refuse (ListingUnsupportedError) a system whose connector has no `records_list`."""
    if not connector_supports(system, "records_list"):
        raise ListingUnsupportedError(
            f"{system.slug} ({system.connector_type}) cannot list its records, so it cannot be reconciled.",
            hint="Reconcile only PSAs and ERPs whose connector lists records (Harvest, sandbox ERP, Tryton).",
        )


def records_pages(
    system: ConnectedSystem,
    entity: str,
    *,
    filters: Mapping[str, Any] | None = None,
    page_size: int,
    correlation_id: str,
) -> Iterator[list[dict[str, Any]]]:
    """Every page of `entity` at `system` matching `filters`, one transport call per page (the gate, the
    timeout, the correlation id and an attempt row each). A failed page raises its classified error."""
    listing_check(system)
    cursor: str | None = None
    for number in range(1, MAX_PAGES + 1):

        def read(connector: Connector, cursor: str | None = cursor) -> ChangeBatch:
            return connector.records_list(entity, cursor=cursor, filters=filters, page_size=page_size)  # type: ignore[attr-defined]

        batch: ChangeBatch = connector_call(
            system,
            LIST_OPERATION,
            read,
            correlation_id=correlation_id,
            entity=entity,
            key=f"page:{number}",
            context={"filters": dict(filters or {})},
        )
        yield batch.records
        if not batch.has_more or not batch.next_cursor:
            return
        cursor = batch.next_cursor
