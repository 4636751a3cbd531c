"""The analytics sink connector against the sandbox warehouse over real HTTP: append once per key, find by key."""

from __future__ import annotations

import pytest

from connectors.choices import SystemRole
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import connector_for
from sandbox.choices import SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.services import sandbox_setting_ensure, sandbox_setting_save

TOKEN = "sink-test-token"


@pytest.fixture
def sink(live_server):
    setting = sandbox_setting_ensure(system=SandboxSystem.ANALYTICS)
    setting.api_token = TOKEN
    sandbox_setting_save(setting=setting, reason="test")
    system = ConnectedSystem.objects.create(
        name="Warehouse",
        slug="warehouse",
        role=SystemRole.ANALYTICS,
        connector_type="analytics_sink",
        base_url=f"{live_server.url}/sandbox/analytics",
        settings={"dataset": "finance", "table_prefix": "hub_", "health_path": "/whoami"},
        credentials={"bearer_token": TOKEN},
    )
    return connector_for(system)


@pytest.mark.django_db(transaction=True)
def test_an_event_delivered_twice_with_one_key_is_stored_once_and_found_by_it(sink):
    # when the same delivery is sent twice (a retry after a lost answer)
    first = sink.upsert("invoice", {"id": "5", "status": "paid"}, "hub-5-1")
    again = sink.upsert("invoice", {"id": "5", "status": "paid"}, "hub-5-1")
    # then the warehouse holds one event in the entity's table, found by the key
    assert (first.created, again.created, first.external_id) == (True, False, again.external_id)
    stored = SandboxRecord.objects.get(system=SandboxSystem.ANALYTICS, object_type="finance")
    assert stored.data == {"table": "hub_invoice", "record": {"id": "5", "status": "paid"}}
    assert sink.find("invoice", "hub-5-1")["id"] == first.external_id
    assert sink.find("invoice", "hub-unknown") is None
    assert sink.health_check().ok


@pytest.mark.django_db(transaction=True)
def test_a_wrong_token_is_refused_and_nothing_is_stored(sink):
    # given the warehouse's token changed
    setting = sandbox_setting_ensure(system=SandboxSystem.ANALYTICS)
    setting.api_token = "rotated-token"
    sandbox_setting_save(setting=setting, reason="test")
    # when an event is sent, then the credentials are refused and nothing is stored
    with pytest.raises(ConnectorError) as refused:
        sink.upsert("invoice", {"id": "6"}, "hub-6-1")
    assert refused.value.status_code == 401 and not refused.value.retryable
    assert not SandboxRecord.objects.filter(system=SandboxSystem.ANALYTICS).exists()
