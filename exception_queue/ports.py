"""What the exception queue needs from the apps above it, without importing them.

The queue sits below the engine: the engine opens items through `exception_queue.services`, so the queue
cannot import the engine back. At start-up (their AppConfig.ready) the engine registers the message
operations a decision carries out (replay, release, reject), and the engine and insights add what an item's
page shows about the work around it (deliveries, cross-references, the trace).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from integrationhub.errors import HubError


@dataclass
class MessageOperations:
    """The engine's operations on a message that decisions call."""

    replay: Callable[..., Any]
    release: Callable[..., Any]
    reject: Callable[..., Any]


_operations: list[MessageOperations] = []
# Each provider fills its part of an item's detail (an ExceptionItemDetail), given the item.
ItemDetailProvider = Callable[[Any], None]
_detail_providers: dict[str, ItemDetailProvider] = {}


def message_operations_register(
    *, replay: Callable[..., Any], release: Callable[..., Any], reject: Callable[..., Any]
) -> None:
    """Register the engine's message operations (once per process; a second registration replaces the first)."""
    _operations[:] = [MessageOperations(replay=replay, release=release, reject=reject)]


def message_operations() -> MessageOperations:
    """The registered message operations; a clear error when the engine app is not installed."""
    if not _operations:
        raise HubError(
            "No engine registered its message operations with the exception queue.",
            hint="Add the 'sync' app to INSTALLED_APPS.",
        )
    return _operations[0]


# Fills the legal entity of items opened without one (from their message, project or system), in place.
ItemEntityResolver = Callable[[list[Any]], None]
_entity_resolvers: list[ItemEntityResolver] = []


def item_entity_resolver_register(resolver: ItemEntityResolver) -> None:
    """Register how the engine tells the legal entity of an item opened without one (replaces an earlier one)."""
    _entity_resolvers[:] = [resolver]


def item_entities_fill(items: list[Any]) -> None:
    """Give the items without a legal entity the one of their workflow run, else what the engine infers (from
    their message, the project or contract it references, or the source system); unknown stays empty."""
    for item in items:
        if item.legal_entity_id is None and item.workflow_run_id is not None and item.workflow_run is not None:
            item.legal_entity_id = item.workflow_run.legal_entity_id
    missing = [item for item in items if item.legal_entity_id is None]
    if missing and _entity_resolvers:
        _entity_resolvers[0](missing)


def item_detail_provider_register(name: str, provider: ItemDetailProvider) -> None:
    """Add (or replace, by name) what an app contributes to an item's page."""
    _detail_providers[name] = provider


def item_detail_providers() -> list[ItemDetailProvider]:
    return list(_detail_providers.values())
