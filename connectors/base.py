"""The connector contract: what a connector declares about itself and the operations the pipeline calls.

A connector class declares its name, label, role hint, a JSON Schema for the system's `settings`, the
parameters that are secret (they live in the encrypted `credentials`, never in `settings`) and its
capabilities: the operations it really implements. The registry refuses a class whose capabilities
and implemented methods disagree, and calling an operation outside the capabilities raises
ConnectorCapabilityError, so the pipeline can ask "can this system do X?" and trust the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from integrationhub.errors import HubError

# Every operation a connector may offer. A connector's `capabilities` is a subset of these names.
OPERATIONS: tuple[str, ...] = (
    "health_check",
    "fetch_changes",
    "get",
    "find",
    "upsert",
    "update",
    "upsert_batch",
    "void",
    "verify_webhook",
)


class ConnectorCapabilityError(HubError):
    """The connector of a system does not implement the operation that was asked of it."""

    status = 501
    code = "connector_capability"
    title = "The connector does not support this operation"


@dataclass(frozen=True)
class HealthResult:
    """The outcome of a connection test: shown in the admin and returned by the API."""

    ok: bool
    status_code: int | None
    duration_ms: float
    message: str
    retryable: bool | None = None


@dataclass(frozen=True)
class ChangeBatch:
    """A page of changed records from `fetch_changes` and the cursor to resume from."""

    records: list[dict[str, Any]]
    next_cursor: str | None
    has_more: bool = False


@dataclass(frozen=True)
class UpsertResult:
    """What a target system answered to an idempotent upsert."""

    external_id: str
    created: bool
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectorSpec:
    """A connector type as the admin, the API and the validation see it."""

    name: str
    label: str
    role_hint: str
    description: str
    parameter_schema: dict[str, Any]
    sensitive_parameters: frozenset[str]
    capabilities: frozenset[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "role_hint": self.role_hint,
            "description": self.description,
            "parameter_schema": self.parameter_schema,
            "sensitive_parameters": sorted(self.sensitive_parameters),
            "capabilities": sorted(self.capabilities),
        }


class Connector:
    """Base of every connector. Subclasses set the class attributes and implement their capabilities."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    role_hint: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameter_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    sensitive_parameters: ClassVar[frozenset[str]] = frozenset()
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # A record the hub created here is updated in place by every later delivery of the same canonical record
    # (found through the cross-reference). False for an append-only event sink, where each delivery is an event
    # of its own and a second one is not a duplicate.
    record_identity: ClassVar[bool] = True

    def __init__(self, *, system: Any, credentials: Mapping[str, Any] | None = None) -> None:
        self.system = system
        self.settings: dict[str, Any] = dict(system.settings or {})
        # Decrypted secrets live on the instance only as long as the call that needs them.
        self.credentials: dict[str, Any] = dict(credentials or {})

    def __repr__(self) -> str:
        # Never include credentials: a repr ends up in tracebacks and logs.
        return f"<{type(self).__name__} system={getattr(self.system, 'slug', None)!r}>"

    @classmethod
    def spec(cls) -> ConnectorSpec:
        return ConnectorSpec(
            name=cls.name,
            label=cls.label,
            role_hint=cls.role_hint,
            description=cls.description,
            parameter_schema=cls.parameter_schema,
            sensitive_parameters=frozenset(cls.sensitive_parameters),
            capabilities=frozenset(cls.capabilities),
        )

    @classmethod
    def implemented_operations(cls) -> frozenset[str]:
        """The operations this class overrides (a base-class method means "not implemented")."""
        return frozenset(op for op in OPERATIONS if getattr(cls, op) is not getattr(Connector, op))

    @classmethod
    def supports(cls, capability: str) -> bool:
        return capability in cls.capabilities

    def require(self, capability: str) -> None:
        """Raise ConnectorCapabilityError unless this connector offers `capability`."""
        if capability not in self.capabilities:
            offered = ", ".join(sorted(self.capabilities)) or "nothing"
            system = getattr(self.system, "slug", "?")
            raise ConnectorCapabilityError(
                f"Connector '{self.name}' (system '{system}') does not support '{capability}'; it offers: {offered}.",
                hint="Choose a connector type that offers this operation, or leave it out of the flow.",
            )

    def __getattribute__(self, item: str) -> Any:
        # The capability check sits in front of every operation, including ones a subclass implements
        # without declaring, so `capabilities` is the single source of truth at run time.
        if item in OPERATIONS:
            object.__getattribute__(self, "require")(item)
        return object.__getattribute__(self, item)

    # --- operations: the base versions are never reached, because require() refuses them first ----

    def health_check(self) -> HealthResult:
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'health_check'.")

    def fetch_changes(self, entity: str, cursor: str | None) -> ChangeBatch:
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'fetch_changes'.")

    def get(self, entity: str, external_id: str) -> dict[str, Any]:
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'get'.")

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'find'.")

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'upsert'.")

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        """Write `payload` onto the record `external_id` the hub created earlier (never a create). A record the
        target no longer has raises TargetRecordGoneError, so the hub asks a person instead of re-creating it."""
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'update'.")

    def updates(self, entity: str) -> bool:
        """Whether a record of `entity` can be changed once created (a posted ledger line, say, cannot)."""
        return "update" in self.capabilities

    def upsert_batch(
        self, entity: str, items: Sequence[tuple[Mapping[str, Any], str]], *, may_exist: bool = True
    ) -> Sequence[UpsertResult | Exception]:
        """Upsert many records of one entity in as few calls as the system allows; results in the order of
        `items` ((payload, idempotency key) pairs). A key the system already holds answers its record; an item
        the system refused answers its classified error (the others still count), a failed call raises.

        `may_exist=False` says no key of the batch was ever sent (first attempts): a connector whose system
        cannot de-duplicate by key itself may then skip looking the keys up. The engine passes True for
        any retry, replay or attempt whose answer was lost."""
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'upsert_batch'.")

    def batches(self, entity: str) -> bool:
        """Whether upsert_batch sends one call for many records of this entity (else one call per record)."""
        return False

    def void(self, entity: str, external_id: str) -> None:
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'void'.")

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        raise ConnectorCapabilityError(f"Connector '{self.name}' does not support 'verify_webhook'.")
