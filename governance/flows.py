"""Registry of flow runners: what a scheduled sync policy starts when its cron fires.

The workflows app registers one runner per flow with `@register_flow_runner(Flow.X)`; governance only
looks them up, so it never imports the engine and a flow without a runner is a warning, not a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from governance.models import SyncPolicy

FlowRunner = Callable[["SyncPolicy"], Any]

_RUNNERS: dict[str, FlowRunner] = {}


class FlowRunStatus(models.TextChoices):
    # Kept beside the registry rather than in choices.py because only sync_policy_run produces them.
    STARTED = "started", "Started"
    NO_RUNNER = "no_runner", "No runner registered for the flow"
    POLICY_MISSING = "policy_missing", "The policy no longer exists"
    POLICY_INACTIVE = "policy_inactive", "The policy is inactive"


@dataclass(frozen=True)
class FlowRunResult:
    """What a scheduled run of a sync policy did (or why it did nothing)."""

    policy_id: int
    flow: str
    status: str
    detail: str = ""
    outcome: Any = None

    @property
    def started(self) -> bool:
        return self.status == FlowRunStatus.STARTED


def register_flow_runner(flow: str) -> Callable[[FlowRunner], FlowRunner]:
    """Decorator: make `runner(policy)` the runner started for `flow` by scheduled sync policies."""

    def decorate(runner: FlowRunner) -> FlowRunner:
        existing = _RUNNERS.get(flow)
        if existing is not None and existing is not runner:
            raise ValueError(
                f"Flow {flow!r} already has the runner {existing.__qualname__}; register one runner per flow."
            )
        _RUNNERS[flow] = runner
        return runner

    return decorate


def flow_runner_get(flow: str) -> FlowRunner | None:
    """The runner registered for `flow`, or None."""
    return _RUNNERS.get(flow)


def flow_runner_unregister(flow: str) -> None:
    """Remove the runner of `flow` (for tests and for reloading a plugin)."""
    _RUNNERS.pop(flow, None)
