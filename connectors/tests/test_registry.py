"""The connector registry: built-in types, freezing, and a real capability check."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from connectors.base import Connector, ConnectorCapabilityError, HealthResult
from connectors.registry import (
    ConnectorRegistry,
    RegistryFrozenError,
    UnknownConnectorTypeError,
    connector_for,
    register_connector,
    registry,
)
from connectors.tests.factories import ConnectedSystemFactory

BUILTIN = {
    "generic_rest",
    "salesforce_crm",
    "harvest_psa",
    "collaboration_suite",
    "tryton_erp",
    "sandbox_erp",
    "analytics_sink",
}


class _Pinger(Connector):
    name = "pinger"
    label = "Pinger"
    capabilities = frozenset({"health_check"})

    def health_check(self) -> HealthResult:
        return HealthResult(ok=True, status_code=200, duration_ms=0.0, message="pong")


def test_builtin_connectors_are_registered_with_valid_parameter_schemas():
    # given the registry after start-up
    # when the specs are listed
    specs = {spec.name: spec for spec in registry.specs()}
    # then every built-in type is there, offers at least health_check and has a valid schema
    assert set(specs) >= BUILTIN
    for spec in specs.values():
        Draft202012Validator.check_schema(spec.parameter_schema)
        assert "health_check" in spec.capabilities
        assert not set(spec.sensitive_parameters) & set(spec.parameter_schema.get("properties", {}))
    assert specs["tryton_erp"].sensitive_parameters == frozenset({"user", "password"})


def test_tryton_type_is_the_full_json_rpc_connector():
    from connectors.tryton import TrytonConnector

    assert registry.get("tryton_erp") is TrytonConnector
    assert {"upsert", "find", "fetch_changes", "void"} <= TrytonConnector.capabilities


def test_registry_is_frozen_after_startup():
    # given the hub's registry, frozen in ConnectorsConfig.ready()
    assert registry.frozen
    # when a connector registers late
    # then it is refused and not added
    with pytest.raises(RegistryFrozenError, match="frozen"):
        register_connector(_Pinger)
    assert "pinger" not in registry


def test_a_fresh_registry_accepts_until_frozen():
    # given a registry that is not frozen yet
    local = ConnectorRegistry()
    local.register(_Pinger)
    # when it is frozen
    local.freeze()
    # then the earlier registration stays and a later one fails
    assert local.names() == ["pinger"]
    with pytest.raises(RegistryFrozenError):
        local.register(_Pinger)


def test_registry_rejects_capabilities_that_are_not_implemented():
    # given a connector that claims upsert without implementing it
    class Liar(Connector):
        name = "liar"
        label = "Liar"
        capabilities = frozenset({"health_check", "upsert"})

        def health_check(self) -> HealthResult:
            return HealthResult(ok=True, status_code=200, duration_ms=0.0, message="")

    # when / then registering it fails and names the missing operation
    with pytest.raises(TypeError, match="upsert"):
        ConnectorRegistry().register(Liar)


@pytest.mark.django_db
def test_calling_an_operation_outside_the_capabilities_raises_capability_error():
    # given a system whose connector only reads (a CSV drop folder cannot be written to)
    system = ConnectedSystemFactory(slug="drop", connector_type="csv_drop", settings={"folder": "x"})
    connector = connector_for(system)
    # when the pipeline asks it to upsert
    with pytest.raises(ConnectorCapabilityError) as caught:
        connector.upsert("project", {"id": "P-1"}, "idem-1")
    # then the error names the connector and the capability, and is a 501 HubError
    assert "csv_drop" in caught.value.detail
    assert "upsert" in caught.value.detail
    assert caught.value.status == 501
    assert not connector.supports("upsert")
    assert connector.supports("health_check")


def test_an_implemented_but_undeclared_operation_is_still_refused():
    # given a connector class that implements `get` but does not declare it (never registered)
    class Sneaky(_Pinger):
        name = "sneaky"

        def get(self, entity, external_id):
            return {"id": external_id}

    class FakeSystem:
        slug = "s"
        settings: dict = {}

    # when get is called, then the capability check refuses it
    with pytest.raises(ConnectorCapabilityError, match=r"'sneaky'.*'get'"):
        Sneaky(system=FakeSystem()).get("client", "1")


@pytest.mark.django_db
def test_connector_for_decrypts_credentials_and_rejects_unknown_types():
    # given a stored system with encrypted credentials
    system = ConnectedSystemFactory(credentials={"api_key": "k-123"})
    fresh = type(system).objects.get(pk=system.pk)
    # when its connector is built
    connector = connector_for(fresh)
    # then the credentials are decrypted and never in the repr
    assert connector.credentials == {"api_key": "k-123"}
    assert "k-123" not in repr(connector)
    # and an unknown connector type is a clear not-found error
    fresh.connector_type = "nope"
    with pytest.raises(UnknownConnectorTypeError, match="nope"):
        connector_for(fresh)
