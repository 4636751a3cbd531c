"""The shared rate budget and the circuit breaker, against the configured cache (Redis in CI)."""

from __future__ import annotations

import pytest

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from sync import circuit
from sync.ratelimit import rate_budget_take
from sync.tests.conftest import unique

pytestmark = pytest.mark.django_db


def test_a_budget_of_5_per_second_allows_5_calls_in_a_second_and_refills_in_the_next():
    # given a fresh budget of 5 calls per second
    key = unique("budget")
    # when 7 calls are asked for within one second, then one in the next second
    decisions = [rate_budget_take(system_key=key, rate_per_second=5, now=1000.1 + i / 100) for i in range(7)]
    later = rate_budget_take(system_key=key, rate_per_second=5, now=1001.05)
    # then 5 go, 2 wait for less than a second, and the next window has room again
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert 0 < decisions[-1].wait_seconds < 1
    assert later.allowed


def test_a_budget_below_one_per_second_spreads_calls_over_a_longer_window():
    # given 0.5 calls per second
    key = unique("slow")
    # when two calls come within the same two seconds
    first = rate_budget_take(system_key=key, rate_per_second=0.5, now=2000.0)
    second = rate_budget_take(system_key=key, rate_per_second=0.5, now=2001.0)
    # then only the first goes
    assert (first.allowed, second.allowed) == (True, False)


def test_the_circuit_opens_after_the_threshold_and_a_probe_success_closes_it(settings):
    # given a system and a threshold of 3 failures, open for 30 s
    settings.HUB_CIRCUIT_FAILURE_THRESHOLD = 3
    settings.HUB_CIRCUIT_OPEN_SECONDS = 30
    system = ConnectedSystem.objects.create(
        name=unique("S"), slug=unique("s"), role="erp", connector_type="generic_rest", base_url="http://127.0.0.1:9"
    )
    # when three calls fail in a row
    opened = [circuit.circuit_record_failure(system=system, now=100.0) for _ in range(3)]
    # then it opened on the third, the system shows it, and calls are refused until the period ends
    assert opened == [False, False, True]
    system.refresh_from_db()
    assert system.state == SystemState.CIRCUIT_OPEN
    assert not circuit.circuit_gate(system=system, now=120.0).allowed
    # when the period is over, exactly one caller gets the probe
    probe = circuit.circuit_gate(system=system, now=131.0)
    other = circuit.circuit_gate(system=system, now=131.0)
    assert (probe.allowed, probe.probe, other.allowed) == (True, True, False)
    # and a successful probe closes the circuit
    assert circuit.circuit_record_success(system=system)
    system.refresh_from_db()
    assert system.state == SystemState.ACTIVE


def test_a_paused_system_is_never_opened_by_the_breaker(settings):
    # given a paused system
    settings.HUB_CIRCUIT_FAILURE_THRESHOLD = 1
    system = ConnectedSystem.objects.create(
        name=unique("S"),
        slug=unique("s"),
        role="erp",
        connector_type="generic_rest",
        base_url="http://127.0.0.1:9",
        state=SystemState.PAUSED,
    )
    # when a call fails
    circuit.circuit_record_failure(system=system)
    # then it stays paused: a person's decision wins
    system.refresh_from_db()
    assert system.state == SystemState.PAUSED
