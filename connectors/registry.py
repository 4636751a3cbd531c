"""The connector registry: connector classes register with a decorator and the registry freezes at start-up.

Built-in connectors live in connectors/builtin.py. Any installed app can add its own in a module named
`connector_plugins` (ConnectorsConfig.ready() imports them all before freezing). Registering later
raises, so every process (web, worker, beat) sees the same set of connector types.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from connectors.base import OPERATIONS, Connector, ConnectorSpec
from integrationhub.errors import HubError, HubNotFoundError


class RegistryFrozenError(HubError):
    """A connector was registered after start-up."""

    status = 500
    code = "connector_registry_frozen"
    title = "The connector registry is frozen"


class UnknownConnectorTypeError(HubNotFoundError):
    """A system names a connector type that is not registered."""

    code = "unknown_connector_type"
    title = "Unknown connector type"


class ConnectorRegistry:
    """Name → connector class. Filled by @register_connector, then frozen in ConnectorsConfig.ready()."""

    def __init__(self) -> None:
        self._types: dict[str, type[Connector]] = {}
        self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        self._frozen = True

    def register(self, cls: type[Connector]) -> type[Connector]:
        """Add a connector class after checking its declaration is coherent."""
        if self._frozen:
            raise RegistryFrozenError(
                f"Cannot register connector '{getattr(cls, 'name', cls.__name__)}': the registry was frozen at "
                "start-up.",
                hint="Register connectors in builtin.py or in an app's connector_plugins module.",
            )
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"{cls!r} is not a Connector subclass")
        if not cls.name or not cls.label:
            raise TypeError(f"Connector {cls.__name__} must set `name` and `label`")
        if cls.name in self._types and self._types[cls.name] is not cls:
            raise TypeError(f"A connector named '{cls.name}' is already registered ({self._types[cls.name].__name__})")
        unknown = set(cls.capabilities) - set(OPERATIONS)
        if unknown:
            raise TypeError(f"Connector '{cls.name}' declares unknown capabilities: {sorted(unknown)}")
        # Declared capabilities must be real methods, and implemented operations must be declared.
        implemented = cls.implemented_operations()
        if set(cls.capabilities) != implemented:
            missing = sorted(set(cls.capabilities) - implemented)
            undeclared = sorted(implemented - set(cls.capabilities))
            raise TypeError(
                f"Connector '{cls.name}': capabilities must match the implemented operations "
                f"(declared but not implemented: {missing}; implemented but not declared: {undeclared})"
            )
        jsonschema.Draft202012Validator.check_schema(cls.parameter_schema)
        overlap = set(cls.sensitive_parameters) & set(cls.parameter_schema.get("properties", {}))
        if overlap:
            raise TypeError(f"Connector '{cls.name}': sensitive parameters must not be settings: {sorted(overlap)}")
        self._types[cls.name] = cls
        return cls

    def get(self, name: str) -> type[Connector]:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownConnectorTypeError(
                f"Unknown connector type '{name}'. Registered types: {', '.join(sorted(self._types)) or 'none'}.",
                errors=[{"field": "connector_type", "message": f"Unknown connector type '{name}'."}],
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def specs(self) -> list[ConnectorSpec]:
        return [self._types[name].spec() for name in self.names()]

    def choices(self) -> list[tuple[str, str]]:
        return [(name, self._types[name].label) for name in self.names()]


registry = ConnectorRegistry()


def register_connector(cls: type[Connector]) -> type[Connector]:
    """Class decorator: add a connector type to the hub's registry."""
    return registry.register(cls)


def connector_for(system: Any) -> Connector:
    """An instance of the system's connector with its credentials decrypted."""
    cls = registry.get(system.connector_type)
    # Reading the field decrypts it (EncryptedJSONField); the instance keeps a copy for its calls.
    return cls(system=system, credentials=system.credentials or {})
