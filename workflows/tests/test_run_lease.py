"""A workflow run's lock is a lease: renewed while its holder works, so a run longer than the lease keeps it,
and freed within one lease when the holder's process is killed (its heartbeat dies with it)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from django.core.cache import cache

from workflows import services
from workflows.services import workflow_run_lock


def _taken_by_another(run_id: int) -> bool:
    with workflow_run_lock(run_id=run_id) as acquired:
        return not acquired


def test_a_run_longer_than_its_lease_keeps_it_while_it_works(monkeypatch):
    # given a lease of one second
    monkeypatch.setattr(services, "RUN_LEASE_SECONDS", 1)
    run_id = 900_000 + os.getpid()
    cache.delete(f"workflows:run-lock:{run_id}")
    # when a worker holds the run for three lease periods
    refused = []
    with workflow_run_lock(run_id=run_id) as acquired:
        assert acquired
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            refused.append(_taken_by_another(run_id))
            time.sleep(0.2)
    # then no other worker could take it meanwhile, and once it is done the next one can
    assert len(refused) > 10 and all(refused)
    assert not _taken_by_another(run_id)


def test_a_killed_holder_frees_its_run_within_one_lease(monkeypatch):
    # given a lease of one second, held by a worker process
    monkeypatch.setattr(services, "RUN_LEASE_SECONDS", 1)
    run_id = 910_000 + os.getpid()
    cache.delete(f"workflows:run-lock:{run_id}")
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: takes the run, says so, and works until it is killed
        try:
            with workflow_run_lock(run_id=run_id) as acquired:
                os.write(ready_write, b"1" if acquired else b"0")
                time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_read, 1) == b"1"
        # while it lives and renews its lease, the run stays its own past the lease period
        time.sleep(1.5)
        assert _taken_by_another(run_id)
        # when the worker is SIGKILLed (its heartbeat with it)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        killed = time.monotonic()
        # then the run is free again within a lease (and a margin for a loaded machine), not a fixed ten minutes
        while _taken_by_another(run_id):
            assert time.monotonic() - killed < 15, "the killed worker's run was not freed"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):  # already killed and reaped above
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        os.close(ready_read)
        os.close(ready_write)
