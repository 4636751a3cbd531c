"""A connector for the tests' local HTTP target (sync/tests/conftest.py): find and upsert over plain REST.

The target keeps records per entity, upserts by the record's `id` and remembers idempotency keys:
POST /records/<entity> with an Idempotency-Key header, GET /records/<entity>?idempotency_key=<key>.
"""

from __future__ import annotations

from typing import Any

from connectors.base import Connector, HealthResult, UpsertResult
from connectors.http import TargetRecordGoneError, client_for, raise_for_status
from connectors.registry import register_connector


@register_connector
class SyncTestTargetConnector(Connector):
    name = "sync_test_target"
    label = "Sync test target (tests only)"
    role_hint = ""
    description = "The sync engine tests' local HTTP target."
    capabilities = frozenset({"health_check", "find", "upsert", "update"})
    parameter_schema = {"type": "object", "properties": {"timeout_seconds": {"type": "number"}}}

    def health_check(self) -> HealthResult:
        response = client_for(self.system).request("GET", "/health")
        return HealthResult(ok=True, status_code=response.status_code, duration_ms=0.0, message="ok")

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        response = client_for(self.system).request(
            "GET", f"/records/{entity}", params={"idempotency_key": idempotency_key}, check=False
        )
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise_for_status(response, system_slug=self.system.slug)
        return response.json()

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        response = client_for(self.system).request("PUT", f"/records/{entity}/{external_id}", json=payload, check=False)
        if response.status_code == 404:
            raise TargetRecordGoneError(f"no {entity} {external_id}", status_code=404, system_slug=self.system.slug)
        raise_for_status(response, system_slug=self.system.slug)
        return UpsertResult(external_id=external_id, created=False, payload=response.json())

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        response = client_for(self.system).request(
            "POST", f"/records/{entity}", json=payload, headers={"Idempotency-Key": idempotency_key}
        )
        body = response.json()
        return UpsertResult(external_id=str(body["id"]), created=bool(body.get("created")), payload=body)
