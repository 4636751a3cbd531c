"""The connector types that ship with the hub: generic REST, Salesforce, Harvest, Graph, the sandbox ERP.

Each declares a parameter schema for `ConnectedSystem.settings`, the secret parameters that belong in
`credentials`, and exactly the operations it implements. Every call goes through connectors.http
(pooled client, correlation id, one log line per call without secrets, one error classification).

Exactly-once: `upsert` always looks the idempotency key up in the target (`find`) before it creates,
and sends the key along when the API accepts one, so retrying after a lost answer (the record was
stored, the response never arrived) finds the record instead of creating a second one. A record that
is found is updated with the fields that differ (none on a plain retry, so a retry writes nothing).

Cursors are opaque strings to the hub. Where an API pages by number or offset, the cursor carries the
`updated_since` watermark of the pass and the next page, and the next pass starts from the newest
change seen (inclusive: a record on the boundary may come twice, one is never skipped).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx

from connectors.base import ChangeBatch, Connector, ConnectorCapabilityError, HealthResult, UpsertResult
from connectors.choices import SystemRole
from connectors.http import (
    ApiKeyAuth,
    BearerAuth,
    ConnectorError,
    OAuth2ClientCredentialsAuth,
    TargetRecordGoneError,
    TerminalConnectorError,
    classify_error,
    client_for,
)
from connectors.http import basic_auth as make_basic_auth
from connectors.registry import register_connector
from integrationhub.errors import HubValidationError

CANONICAL_ENTITIES = [
    "client",
    "contact",
    "opportunity",
    "contract",
    "project",
    "milestone",
    "resource",
    "role",
    "rate_card",
    "time_entry",
    "expense",
    "invoice",
    "payment",
]

HEALTH_PATH: dict[str, Any] = {
    "type": "string",
    "pattern": "^/",
    "default": "/health",
    "description": "Path the connection test GETs, relative to the base URL; a 2xx answer means healthy.",
}
TIMEOUT_SECONDS: dict[str, Any] = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 120,
    "default": 10,
    "description": "Read timeout of each call, in seconds.",
}
AUTH_MODES = ["none", "api_key", "bearer", "oauth2", "basic"]
AUTH_MODE: dict[str, Any] = {
    "enum": AUTH_MODES,
    "default": "api_key",
    "description": "api_key: credentials.api_key in a header; bearer: credentials.bearer_token; oauth2: client "
    "credentials grant with credentials.client_id/client_secret; basic: credentials.username/password.",
}
API_KEY_HEADER: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9-]+$", "default": "X-API-Key"}
TOKEN_URL: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "description": "OAuth2 token endpoint: absolute, or a path relative to the base URL.",
}
SCOPE: dict[str, Any] = {"type": "string", "description": "OAuth2 scopes, space separated."}
# With auth_mode oauth2 a token URL is needed; JSON Schema says so, and the error names the field.
OAUTH2_NEEDS_TOKEN_URL: dict[str, Any] = {
    "if": {"properties": {"auth_mode": {"const": "oauth2"}}, "required": ["auth_mode"]},
    "then": {"required": ["token_url"]},
}
AUTH_SECRETS = frozenset({"api_key", "bearer_token", "client_id", "client_secret", "username", "password"})


PAGE_SIZE: dict[str, Any] = {
    "type": "integer",
    "minimum": 1,
    "maximum": 2000,
    "default": 100,
    "description": "Records per page when fetching changes.",
}
MAX_CHANGED_FIELDS_PREVIEW = 5


class CredentialsRefusedError(TerminalConnectorError):
    """The system refused the hub's credentials (401/403, or the OAuth2 token endpoint said no)."""

    code = "connector_auth"
    title = "The connected system refused the hub's credentials"


# --- small helpers shared by the connectors -------------------------------------------------------------


def cursor_encode(state: Mapping[str, Any]) -> str:
    """A cursor the hub stores as text: compact JSON of the connector's paging state."""
    return json.dumps({k: v for k, v in state.items() if v is not None}, separators=(",", ":"), sort_keys=True)


def cursor_decode(cursor: str | None, *, system_slug: str = "") -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise TerminalConnectorError(f"Invalid cursor {cursor[:80]!r}", system_slug=system_slug)
    return state


def dotted(data: Any, path: str) -> Any:
    """`data["a"]["b"]` for the path "a.b"; None when a step is missing."""
    for part in [p for p in path.split(".") if p]:
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _comparable(value: Any) -> Any:
    # Numbers come back normalised ("10.00", 10.0): compare them as decimals, everything else as is.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, Decimal)) or (isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value)):
        try:
            return Decimal(str(value)).normalize()
        except InvalidOperation:
            return value
    return value


def changed_fields(existing: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload fields whose value differs from the record as the system shows it.

    A reference sent as `project_id` is shown by some APIs as `project: {id, name}`; both forms compare.
    """
    changes: dict[str, Any] = {}
    for name, value in payload.items():
        if name in existing:
            current = existing[name]
        elif name.endswith("_id") and isinstance(existing.get(name[:-3]), Mapping):
            current = existing[name[:-3]].get("id")
        else:
            changes[name] = value
            continue
        if _comparable(current) != _comparable(value):
            changes[name] = value
    return changes


def newest(current: str | None, candidate: Any) -> str | None:
    """The later of two ISO timestamps (the watermark of a pass)."""
    if not candidate:
        return current
    candidate = str(candidate)
    if not current:
        return candidate
    try:
        return candidate if _parse_time(candidate) > _parse_time(current) else current
    except ValueError:
        return max(current, candidate)


def _parse_time(value: str) -> datetime:
    text = value.strip().replace("Z", "+00:00")
    # Salesforce writes +0000; fromisoformat wants +00:00.
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    return datetime.fromisoformat(text)


class _RefusingOAuth2Auth(OAuth2ClientCredentialsAuth):
    """OAuth2 client credentials whose token-endpoint refusal reads as "credentials refused"."""

    def _store(self, response: httpx.Response, system_slug: str) -> str:
        if response.status_code in (400, 401, 403):
            try:
                error = str(response.json().get("error") or "")
            except (ValueError, AttributeError):
                error = ""
            # invalid_client / unauthorized_client / invalid_grant: the id or secret is wrong or revoked.
            if response.status_code != 400 or error in ("", "invalid_client", "unauthorized_client", "invalid_grant"):
                reason = f": {error}" if error else ""
                raise CredentialsRefusedError(
                    f"The token endpoint of {system_slug or 'the system'} refused the hub's client credentials "
                    f"(HTTP {response.status_code}{reason})",
                    status_code=response.status_code,
                    system_slug=system_slug,
                    hint="Check the client id and secret of the system, and that the app is still authorised.",
                )
        return super()._store(response, system_slug)


class RestConnector(Connector):
    """Shared plumbing of the HTTP/JSON connectors: auth from the credentials, calls, a GET health check."""

    default_auth_mode = "api_key"

    def auth_mode(self) -> str:
        return str(self.settings.get("auth_mode", self.default_auth_mode))

    def _credential(self, key: str) -> str:
        value = self.credentials.get(key)
        if not value:
            raise HubValidationError(
                f"System '{self.system.slug}' uses auth mode '{self.auth_mode()}' but credentials.{key} is not set.",
                errors=[{"field": f"credentials.{key}", "message": "This credential is required by the auth mode."}],
                hint="Set the credentials of the system in the admin or through the API.",
            )
        return str(value)

    def token_url(self) -> str:
        url = str(self.settings.get("token_url", ""))
        return url if "://" in url else self.system.base_url.rstrip("/") + "/" + url.lstrip("/")

    def auth(self) -> httpx.Auth | None:
        """The httpx auth for this system's auth mode; None when the mode needs no credentials."""
        mode = self.auth_mode()
        if mode == "api_key":
            return ApiKeyAuth(self._credential("api_key"), header=self.settings.get("api_key_header", "X-API-Key"))
        if mode == "bearer":
            return BearerAuth(self._credential("bearer_token"))
        if mode == "basic":
            return make_basic_auth(self._credential("username"), self._credential("password"))
        if mode == "oauth2":
            return _RefusingOAuth2Auth(
                token_url=self.token_url(),
                client_id=self._credential("client_id"),
                client_secret=self._credential("client_secret"),
                scope=str(self.settings.get("scope", "")),
                cache_namespace=self.system.slug,
            )
        return None

    def extra_headers(self) -> dict[str, str]:
        return {}

    @property
    def slug(self) -> str:
        return str(getattr(self.system, "slug", ""))

    def page_size(self, default: int = 100) -> int:
        return int(self.settings.get("page_size") or default)

    def raise_for(self, response: httpx.Response) -> None:
        """Raise the classified error of a failed answer; 401/403 say the credentials were refused."""
        if response.status_code in (401, 403):
            raise CredentialsRefusedError(
                f"{self.label} ({self.slug}) refused the hub's credentials: HTTP {response.status_code} on "
                f"{response.request.url.path}",
                status_code=response.status_code,
                system_slug=self.slug,
                hint="Check the system's credentials and the permissions of the account the hub uses.",
            )
        if response.status_code >= 400:
            raise classify_error(response, system_slug=self.slug)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
        auth: bool = True,
    ) -> httpx.Response | None:
        """One call through the system's pooled client; with `missing_ok` a 404 answers None."""
        response = client_for(self.system).request(
            method,
            path,
            auth=self.auth() if auth else None,
            headers={**self.extra_headers(), **(headers or {})},
            params=params,
            json=json,
            check=False,
        )
        if missing_ok and response.status_code in (404, 410):
            return None
        self.raise_for(response)
        return response

    def call_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        if response is None:
            return None
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise TerminalConnectorError(
                f"{self.slug} answered {method} {httpx.URL(path).path} with a body that is not JSON",
                status_code=response.status_code,
                system_slug=self.slug,
            ) from exc

    def upsert_each(
        self, entity: str, items: Sequence[tuple[Mapping[str, Any], str]]
    ) -> list[UpsertResult | ConnectorError]:
        """A batch without a batch call: one upsert per item, a refused item answering its error (a failed
        call of any other kind raises, as a failed batch call would)."""
        results: list[UpsertResult | ConnectorError] = []
        for payload, key in items:
            try:
                results.append(self.upsert(entity, dict(payload), key))
            except TerminalConnectorError as exc:
                results.append(exc)
        return results

    def batch_answer(
        self, entity: str, count: int, answer: Any, id_of: Callable[[Mapping[str, Any]], str]
    ) -> list[UpsertResult | ConnectorError]:
        """The results of a batch create call ({"results": [{"status", "record" | "detail", "fields"}]}, one per
        item in order): an UpsertResult per stored item (created=False when its key was already used) or the
        TerminalConnectorError of an item the system refused."""
        rows = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(rows, list) or len(rows) != count:
            raise TerminalConnectorError(
                f"{self.slug} answered the batch of {count} {entity} with an unexpected body",
                system_slug=self.slug,
            )
        answered: list[UpsertResult | ConnectorError] = []
        for row in rows:
            status = int(row.get("status") or 0) if isinstance(row, Mapping) else 0
            record = row.get("record") if isinstance(row, Mapping) else None
            if status in (200, 201) and isinstance(record, dict):
                answered.append(UpsertResult(external_id=id_of(record), created=status == 201, payload=record))
                continue
            details = row if isinstance(row, Mapping) else {}
            fields = "; ".join(f"{name}: {text}" for name, text in (details.get("fields") or {}).items())
            detail = str(details.get("detail") or details.get("error") or "rejected")
            answered.append(
                TerminalConnectorError(
                    f"{self.slug} refused the {entity}: {detail}" + (f" ({fields})" if fields else ""),
                    status_code=status or None,
                    system_slug=self.slug,
                )
            )
        return answered

    def health_check(self) -> HealthResult:
        """GET the health path; 2xx is healthy, anything else raises the classified connector error."""
        path = str(self.settings.get("health_path", "/health"))
        # A health endpoint is often public; only authenticate when credentials were given.
        started = time.perf_counter()
        response = self.call("GET", path, auth=bool(self.credentials))
        assert response is not None
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        return HealthResult(
            ok=True,
            status_code=response.status_code,
            duration_ms=duration_ms,
            message=f"GET {path} answered {response.status_code} {response.reason_phrase}",
        )

    def unknown_entity(self, entity: str, known: Mapping[str, Any]) -> ConnectorCapabilityError:
        return ConnectorCapabilityError(
            f"Connector '{self.name}' (system '{self.slug}') does not handle entity '{entity}'; "
            f"it handles: {', '.join(sorted(known)) or 'none'}.",
            hint="Map the flow to an entity this system handles, or configure it in the system's settings.",
        )


def _update_by_id(
    connector: RestConnector, entity: str, collection: str, external_id: str, payload: Mapping[str, Any]
) -> UpsertResult:
    """Read the record at <collection>/<id>, PATCH the fields of `payload` that differ; a record the system no
    longer has (404 or 410) raises TargetRecordGoneError."""
    path = f"{collection}/{quote(str(external_id), safe='')}"
    found = connector.call_json("GET", path, missing_ok=True)
    if found is None:
        raise TargetRecordGoneError(
            f"{connector.slug} has no {entity} {external_id} any more (HTTP 404 on GET {path})",
            status_code=404,
            system_slug=connector.slug,
            hint="Re-create the record at the target, or skip the update if it was deleted on purpose.",
        )
    body = changed_fields(found, dict(payload))
    record = connector.call_json("PATCH", path, json=body) if body else found
    return UpsertResult(external_id=str(external_id), created=False, payload=dict(record or found))


def with_id(record: Mapping[str, Any], id_value: Any) -> dict[str, Any]:
    """The record with the hub's `id` key (what the sync engine reads) set to the system's id."""
    return {**record, "id": str(id_value)}


@register_connector
class GenericRestConnector(RestConnector):
    """Any JSON-over-HTTP API, configured per entity: where records live, how to page and find them."""

    name = "generic_rest"
    label = "Generic REST API"
    role_hint = ""
    description = "Any JSON-over-HTTP API: one endpoint per canonical entity, configurable auth and pagination."
    sensitive_parameters = AUTH_SECRETS
    capabilities = frozenset(
        {"health_check", "fetch_changes", "get", "find", "upsert", "update", "upsert_batch", "void"}
    )
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["auth_mode"],
        "properties": {
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
            "auth_mode": AUTH_MODE,
            "api_key_header": API_KEY_HEADER,
            "token_url": TOKEN_URL,
            "scope": SCOPE,
            "endpoints": {
                "type": "object",
                "description": "Per canonical entity, where its records live.",
                "propertyNames": {"enum": CANONICAL_ENTITIES},
                "additionalProperties": {"$ref": "#/$defs/endpoint"},
            },
            "pagination": {"$ref": "#/$defs/pagination"},
        },
        "allOf": [OAUTH2_NEEDS_TOKEN_URL],
        "$defs": {
            "endpoint": {
                "type": "object",
                "additionalProperties": False,
                "required": ["path"],
                "properties": {
                    "path": {"type": "string", "pattern": "^/", "description": "Collection path, e.g. /v1/projects"},
                    "id_field": {"type": "string", "minLength": 1, "default": "id"},
                    "updated_since_param": {
                        "type": "string",
                        "description": "Query parameter for incremental pulls, e.g. updated_since.",
                    },
                    "updated_field": {
                        "type": "string",
                        "default": "updated_at",
                        "description": "Field of a record holding its last change (the watermark of a pull).",
                    },
                    "results_path": {
                        "type": "string",
                        "description": "Dotted path of the record list in a list response, e.g. data.items.",
                    },
                    "lookup_param": {
                        "type": "string",
                        "description": "Query parameter that finds a record by idempotency key, e.g. "
                        "idempotency_key or external_ref. Without it `find` finds nothing.",
                    },
                    "idempotency_field": {
                        "type": "string",
                        "description": "Payload field the key is written to on create (for lookup_param to find).",
                    },
                    "idempotency_header": {"type": "string", "default": "Idempotency-Key"},
                    "upsert_method": {
                        "enum": ["POST", "PUT", "PATCH"],
                        "default": "POST",
                        "description": "Method that creates a record on the collection path.",
                    },
                    "update_method": {
                        "enum": ["PUT", "PATCH", "none"],
                        "default": "PATCH",
                        "description": "Method that updates a record the hub created (on update_path); none: records "
                        "of this entity cannot change once created, and a later update opens an exception item.",
                    },
                    "update_path": {
                        "type": "string",
                        "pattern": "^/",
                        "description": "Path of one record for updates, with {id} for its id, e.g. /v1/projects/{id}. "
                        "Default: <path>/<id>.",
                    },
                    "void_method": {"enum": ["DELETE", "none"], "default": "DELETE"},
                    "batch_path": {
                        "type": "string",
                        "pattern": "^/",
                        "description": "Path that creates many records in one call, once per key: POST "
                        '{"items": [record + idempotency_field or "idempotency_key"]} answering {"results": '
                        '[{"status": 201 or 200 (key already used) or 4xx, "record": {...}, "detail": "..."}]} in '
                        "order. Without it, a batch is one upsert per record.",
                    },
                },
            },
            "pagination": {
                "type": "object",
                "additionalProperties": False,
                "required": ["style"],
                "properties": {
                    "style": {"enum": ["none", "page", "offset", "cursor", "link"]},
                    "page_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    "page_param": {"type": "string", "default": "page"},
                    "page_size_param": {"type": "string", "default": "per_page"},
                    "offset_param": {"type": "string", "default": "offset"},
                    "limit_param": {"type": "string", "default": "limit"},
                    "cursor_param": {"type": "string", "default": "cursor"},
                    "next_cursor_path": {"type": "string", "description": "Dotted path of the next cursor."},
                    "has_more_path": {
                        "type": "string",
                        "description": "Dotted path of a boolean 'more pages follow' (else: a full page means more).",
                    },
                },
            },
        },
    }

    def endpoint(self, entity: str) -> dict[str, Any]:
        endpoints = self.settings.get("endpoints") or {}
        if entity not in endpoints:
            raise self.unknown_entity(entity, endpoints)
        return dict(endpoints[entity])

    def _pagination(self) -> dict[str, Any]:
        return dict(self.settings.get("pagination") or {"style": "none"})

    def _records(self, endpoint: Mapping[str, Any], body: Any) -> list[dict[str, Any]]:
        path = endpoint.get("results_path")
        rows = dotted(body, path) if path else body
        if rows is None and isinstance(body, Mapping):
            # Common envelopes, when results_path was not configured.
            rows = next((body[k] for k in ("results", "data", "items", "records", "value") if k in body), None)
        if not isinstance(rows, list):
            raise TerminalConnectorError(
                f"{self.slug} answered a list call without a record list (set results_path)", system_slug=self.slug
            )
        return [dict(row) for row in rows if isinstance(row, Mapping)]

    def _id(self, endpoint: Mapping[str, Any], record: Mapping[str, Any]) -> str:
        value = dotted(record, str(endpoint.get("id_field", "id")))
        if value in (None, ""):
            raise TerminalConnectorError(
                f"{self.slug} answered a record without its id field '{endpoint.get('id_field', 'id')}'",
                system_slug=self.slug,
            )
        return str(value)

    def _detail_path(self, endpoint: Mapping[str, Any], external_id: str) -> str:
        return f"{str(endpoint['path']).rstrip('/')}/{quote(str(external_id), safe='')}"

    def get(self, entity: str, external_id: str) -> dict[str, Any]:
        endpoint = self.endpoint(entity)
        record = self.call_json("GET", self._detail_path(endpoint, external_id))
        return with_id(record, self._id(endpoint, record))

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        endpoint = self.endpoint(entity)
        lookup = endpoint.get("lookup_param")
        if not lookup:
            return None
        pagination = self._pagination()
        params: dict[str, Any] = {str(lookup): idempotency_key}
        if pagination.get("style") in ("page", "link"):
            params[pagination.get("page_size_param", "per_page")] = 1
        elif pagination.get("style") in ("offset", "cursor"):
            params[pagination.get("limit_param", "limit")] = 1
        rows = self._records(endpoint, self.call_json("GET", str(endpoint["path"]), params=params))
        field = endpoint.get("idempotency_field")
        if field:
            # An API that ignores an unknown filter answers everything: keep only the exact match.
            rows = [row for row in rows if str(dotted(row, str(field))) == idempotency_key]
        return with_id(rows[0], self._id(endpoint, rows[0])) if rows else None

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        endpoint = self.endpoint(entity)
        found = self.find(entity, idempotency_key)
        if found is not None:
            external_id = found["id"]
            method = str(endpoint.get("update_method", "PATCH"))
            changes = changed_fields(found, payload)
            if method == "none" or not changes:
                return UpsertResult(external_id=external_id, created=False, payload=found)
            body = changes if method == "PATCH" else payload
            updated = self.call_json(method, self._detail_path(endpoint, external_id), json=body)
            return UpsertResult(external_id=external_id, created=False, payload=updated or found)
        body = dict(payload)
        if endpoint.get("idempotency_field"):
            body[str(endpoint["idempotency_field"])] = idempotency_key
        header = str(endpoint.get("idempotency_header") or "Idempotency-Key")
        created = self.call_json(
            str(endpoint.get("upsert_method", "POST")),
            str(endpoint["path"]),
            json=body,
            headers={header: idempotency_key},
        )
        return UpsertResult(external_id=self._id(endpoint, created), created=True, payload=created)

    def updates(self, entity: str) -> bool:
        return str(self.endpoint(entity).get("update_method", "PATCH")) != "none"

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        """PATCH (or PUT) the payload onto the record at update_path; a 404 or 410 says it is gone."""
        endpoint = self.endpoint(entity)
        method = str(endpoint.get("update_method", "PATCH"))
        if method == "none":
            raise ConnectorCapabilityError(
                f"System '{self.slug}' does not update '{entity}' records (update_method is none).",
                hint="Set an update_method for the entity's endpoint, or correct the record at the target by hand.",
            )
        template = endpoint.get("update_path")
        path = (
            str(template).replace("{id}", quote(str(external_id), safe=""))
            if template
            else self._detail_path(endpoint, external_id)
        )
        response = self.call(method, path, json=payload, missing_ok=True)
        if response is None:
            raise TargetRecordGoneError(
                f"{self.slug} has no {entity} {external_id} any more (HTTP 404 on {method} {httpx.URL(path).path})",
                status_code=404,
                system_slug=self.slug,
                hint="Re-create the record at the target, or skip the update if it was deleted on purpose.",
            )
        answer: Any = {}
        if response.content:
            try:
                answer = response.json()
            except ValueError:
                answer = {}
        return UpsertResult(external_id=str(external_id), created=False, payload=answer or dict(payload))

    def batches(self, entity: str) -> bool:
        """Whether upsert_batch sends one call for many records of this entity (its endpoint has a batch_path)."""
        return bool(self.endpoint(entity).get("batch_path"))

    def upsert_batch(
        self, entity: str, items: Sequence[tuple[Mapping[str, Any], str]], *, may_exist: bool = True
    ) -> Sequence[UpsertResult | Exception]:
        """Many records in one call to the endpoint's batch_path (each created once per key); without one, an
        upsert per record, a refused record answering its error. A failure of the whole call raises.

        With `may_exist` (a retry, a replay, a lost answer) every key is looked up first, one call each, and
        only the keys the target does not hold are posted: a target that does not de-duplicate by key itself
        would otherwise store a record twice."""
        endpoint = self.endpoint(entity)
        if not endpoint.get("batch_path"):
            return list(self.upsert_each(entity, items))
        if not items:
            return []
        answers: list[UpsertResult | Exception | None] = [None] * len(items)
        if may_exist and endpoint.get("lookup_param"):
            for position, (_, key) in enumerate(items):
                found = self.find(entity, key)
                if found is not None:
                    answers[position] = UpsertResult(external_id=str(found["id"]), created=False, payload=found)
        unsent = [position for position, answer in enumerate(answers) if answer is None]
        if unsent:
            key_field = str(endpoint.get("idempotency_field") or "idempotency_key")
            body = {"items": [{**items[p][0], key_field: items[p][1]} for p in unsent]}
            answer = self.call_json("POST", str(endpoint["batch_path"]), json=body)
            posted = self.batch_answer(entity, len(unsent), answer, lambda record: self._id(endpoint, record))
            for position, result in zip(unsent, posted, strict=True):
                answers[position] = result
        return [answer for answer in answers if answer is not None]

    def void(self, entity: str, external_id: str) -> None:
        endpoint = self.endpoint(entity)
        if endpoint.get("void_method", "DELETE") == "none":
            raise ConnectorCapabilityError(f"System '{self.slug}' does not void '{entity}' (void_method is none).")
        # Already gone is voided: compensation may run twice.
        self.call("DELETE", self._detail_path(endpoint, external_id), missing_ok=True)

    def fetch_changes(self, entity: str, cursor: str | None) -> ChangeBatch:
        """One page of records changed since the cursor, in the API's own paging style."""
        endpoint = self.endpoint(entity)
        pagination = self._pagination()
        style = str(pagination.get("style", "none"))
        size = int(pagination.get("page_size", 100))
        state = cursor_decode(cursor, system_slug=self.slug)
        since_param = endpoint.get("updated_since_param")
        updated_field = str(endpoint.get("updated_field", "updated_at"))
        params: dict[str, Any] = {}
        if since_param and state.get("since") and style != "cursor":
            params[str(since_param)] = state["since"]
        path = str(endpoint["path"])
        if style == "page":
            page = int(state.get("page", 1))
            params |= {pagination.get("page_param", "page"): page, pagination.get("page_size_param", "per_page"): size}
        elif style == "offset":
            offset = int(state.get("offset", 0))
            params |= {pagination.get("offset_param", "offset"): offset, pagination.get("limit_param", "limit"): size}
        elif style == "cursor":
            params[pagination.get("limit_param", "limit")] = size
            if state.get("cursor"):
                params[pagination.get("cursor_param", "cursor")] = state["cursor"]
        elif style == "link":
            params[pagination.get("page_size_param", "per_page")] = size
            if state.get("url"):
                # The next link carries every parameter itself; passing params would replace its query.
                path, params = str(state["url"]), {}
        response = self.call("GET", path, params=params or None)
        assert response is not None
        body = response.json()
        rows = self._records(endpoint, body)
        records = [with_id(row, self._id(endpoint, row)) for row in rows]
        watermark = state.get("max")
        for row in rows:
            watermark = newest(watermark, dotted(row, updated_field))
        has_more_path = pagination.get("has_more_path")
        full_page = len(rows) >= size
        if style == "cursor":
            next_value = dotted(body, str(pagination.get("next_cursor_path", "next_cursor")))
            more = bool(dotted(body, str(has_more_path))) if has_more_path else bool(next_value) and full_page
            # The API's cursor is the position itself: keep it even at the end, the next pull continues there.
            next_state = {"cursor": next_value or state.get("cursor")}
            return ChangeBatch(records=records, next_cursor=cursor_encode(next_state), has_more=more)
        if style == "page":
            more = bool(dotted(body, str(has_more_path))) if has_more_path else full_page
            next_state = {"since": state.get("since"), "page": int(state.get("page", 1)) + 1, "max": watermark}
        elif style == "offset":
            more = bool(dotted(body, str(has_more_path))) if has_more_path else full_page
            next_state = {
                "since": state.get("since"),
                "offset": int(state.get("offset", 0)) + len(rows),
                "max": watermark,
            }
        elif style == "link":
            next_url = response.links.get("next", {}).get("url")
            more = bool(next_url)
            next_state = {"since": state.get("since"), "url": next_url, "max": watermark}
        else:
            more = False
            next_state = {}
        if not more:
            # The pass is complete: the next one asks for what changed since the newest change seen.
            next_state = {"since": watermark or state.get("since")} if since_param else {}
        return ChangeBatch(
            records=records, next_cursor=cursor_encode(next_state) if next_state else None, has_more=more
        )


SALESFORCE_OBJECTS = {"client": "Account", "opportunity": "Opportunity", "contact": "Contact"}
# Fields a pull selects when settings.query_fields does not say (SOQL has no SELECT *).
SALESFORCE_FIELDS = {
    "Account": ["Name", "AccountNumber", "Type", "Industry", "BillingCountry", "CurrencyIsoCode"],
    "Contact": ["FirstName", "LastName", "Email", "Phone", "Title", "AccountId"],
    "Opportunity": ["Name", "AccountId", "StageName", "Amount", "CurrencyIsoCode", "CloseDate", "IsClosed", "IsWon"],
}
SALESFORCE_SYSTEM_FIELDS = ["Id", "IsDeleted", "CreatedDate", "LastModifiedDate"]
# Canonical invoice field → the custom field on Account and Opportunity that shows it (invoice status flow).
INVOICE_STATUS_FIELDS = {
    "number": "Last_Invoice_Number__c",
    "total_amount": "Last_Invoice_Amount__c",
    "status": "Last_Invoice_Status__c",
    "paid_at": "Last_Invoice_Paid_Date__c",
}


def _number(value: Any) -> Any:
    """A decimal string as a JSON number (Salesforce currency fields are numbers)."""
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return value


SALESFORCE_FIELD = r"^[A-Za-z][A-Za-z0-9_]*$"


@register_connector
class SalesforceCrmConnector(RestConnector):
    """Salesforce REST: OAuth2 client credentials, SOQL pulls paged by nextRecordsUrl, upsert by external id."""

    name = "salesforce_crm"
    label = "Salesforce CRM"
    role_hint = SystemRole.CRM
    description = "Salesforce REST API with OAuth2; upserts by an external-id field."
    default_auth_mode = "oauth2"
    sensitive_parameters = frozenset({"client_id", "client_secret", "username", "password", "security_token"})
    capabilities = frozenset({"health_check", "fetch_changes", "get", "find", "upsert", "update", "void"})
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["api_version", "external_id_field"],
        "properties": {
            "api_version": {"type": "string", "pattern": r"^v\d{2,3}\.0$", "default": "v61.0"},
            "token_path": {
                "type": "string",
                "pattern": "^/",
                "default": "/services/oauth2/token",
                "description": "OAuth2 token endpoint relative to the instance URL.",
            },
            "external_id_field": {
                "type": "string",
                "pattern": r"^[A-Za-z][A-Za-z0-9_]*__c$",
                "default": "Hub_Id__c",
                "description": "Custom external-id field used for idempotent upserts.",
            },
            "object_names": {
                "type": "object",
                "description": "Canonical entity → SObject, e.g. client → Account.",
                "propertyNames": {"enum": CANONICAL_ENTITIES},
                "additionalProperties": {"type": "string", "pattern": SALESFORCE_FIELD},
            },
            "query_fields": {
                "type": "object",
                "description": "SObject → the fields a pull selects (Id, IsDeleted, CreatedDate, LastModifiedDate "
                "and the external-id field are always added).",
                "additionalProperties": {"type": "array", "items": {"type": "string", "pattern": SALESFORCE_FIELD}},
            },
            "page_size": {
                "type": "integer",
                "minimum": 1,
                "maximum": 2000,
                "default": 200,
                "description": "batchSize of a SOQL query (Sforce-Query-Options).",
            },
            "invoice_match_field": {
                "type": "string",
                "pattern": r"^[A-Za-z][A-Za-z0-9_]*__c$",
                "default": "External_Id__c",
                "description": "External-id field of Account and Opportunity holding the ids the ERP carries "
                "for them; the invoice status flow finds the records to update by it.",
            },
            "invoice_status_fields": {
                "type": "object",
                "description": "Canonical invoice field → the Account/Opportunity field that shows it.",
                "propertyNames": {"enum": ["number", "total_amount", "status", "paid_at", "due_date", "currency"]},
                "additionalProperties": {"type": "string", "pattern": SALESFORCE_FIELD},
            },
            "scope": SCOPE,
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
    }

    def auth_mode(self) -> str:
        return "oauth2"

    def token_url(self) -> str:
        return self.system.base_url.rstrip("/") + str(self.settings.get("token_path", "/services/oauth2/token"))

    @property
    def data_path(self) -> str:
        return f"/services/data/{self.settings.get('api_version', 'v61.0')}"

    @property
    def external_id_field(self) -> str:
        return str(self.settings.get("external_id_field", "Hub_Id__c"))

    def sobject(self, entity: str) -> str:
        names = {**SALESFORCE_OBJECTS, **(self.settings.get("object_names") or {})}
        if entity not in names:
            raise self.unknown_entity(entity, names)
        return str(names[entity])

    def _normalise(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return with_id({k: v for k, v in record.items() if k != "attributes"}, record.get("Id"))

    def _by_key_path(self, sobject: str, key: str) -> str:
        return f"{self.data_path}/sobjects/{sobject}/{self.external_id_field}/{quote(key, safe='')}"

    def get(self, entity: str, external_id: str) -> dict[str, Any]:
        sobject = self.sobject(entity)
        return self._normalise(self.call_json("GET", f"{self.data_path}/sobjects/{sobject}/{quote(external_id)}"))

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        if entity == "invoice" and entity not in (self.settings.get("object_names") or {}):
            return None  # written onto the Account and Opportunity, which the upsert compares field by field
        record = self.call_json("GET", self._by_key_path(self.sobject(entity), idempotency_key), missing_ok=True)
        return self._normalise(record) if record else None

    def _invoice_fields(self) -> dict[str, str]:
        return {**INVOICE_STATUS_FIELDS, **(self.settings.get("invoice_status_fields") or {})}

    def _by_match_field(self, sobject: str, value: str) -> dict[str, Any] | None:
        field = str(self.settings.get("invoice_match_field", "External_Id__c"))
        path = f"{self.data_path}/sobjects/{sobject}/{field}/{quote(value, safe='')}"
        record = self.call_json("GET", path, missing_ok=True)
        return self._normalise(record) if record else None

    def invoice_status_apply(self, payload: Mapping[str, Any]) -> UpsertResult:
        """Write an invoice's number, amount, status and paid date onto its Account and Opportunity, found by
        their match field (the ids the ERP carries for them); only the fields that differ are sent."""
        values = {
            field: payload.get(source) if source != "total_amount" else _number(payload.get(source))
            for source, field in self._invoice_fields().items()
        }
        values = {k: (str(v)[:10] if k.endswith("Date__c") and v else v) for k, v in values.items()}
        client = payload.get("client") or {}
        targets = [
            ("Account", str(client.get("client_id") or "") if isinstance(client, Mapping) else ""),
            ("Opportunity", str(payload.get("opportunity_id") or "")),
        ]
        written: list[str] = []
        for sobject, match in targets:
            if not match:
                continue
            record = self._by_match_field(sobject, match)
            if record is None:
                raise TerminalConnectorError(
                    f"{self.slug} has no {sobject} whose match field is {match!r}; sync the client and the "
                    "opportunity first, or correct the ERP reference, then replay.",
                    status_code=404,
                    system_slug=self.slug,
                )
            changes = changed_fields(record, values)
            if changes:
                self.call("PATCH", f"{self.data_path}/sobjects/{sobject}/{quote(record['id'])}", json=changes)
            written.append(f"{sobject}/{record['id']}")
        if not written:
            raise TerminalConnectorError(
                f"The invoice names neither a client nor an opportunity, so {self.slug} has nothing to update.",
                system_slug=self.slug,
            )
        external_id = f"{'+'.join(written)}#{payload.get('id', '')}"
        return UpsertResult(external_id=external_id[:200], created=False, payload=values)

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        """Find by the external-id field; update the record found, else upsert by external id (201).
        An invoice is not an object of its own: its status is written onto its Account and Opportunity."""
        if entity == "invoice" and entity not in (self.settings.get("object_names") or {}):
            return self.invoice_status_apply(payload)
        sobject = self.sobject(entity)
        body = {k: v for k, v in payload.items() if k not in ("Id", "attributes", self.external_id_field)}
        found = self.find(entity, idempotency_key)
        if found is not None:
            changes = changed_fields(found, body)
            if changes:
                self.call("PATCH", f"{self.data_path}/sobjects/{sobject}/{quote(found['id'])}", json=changes)
            return UpsertResult(external_id=found["id"], created=False, payload={**found, **changes})
        answer = self.call_json("PATCH", self._by_key_path(sobject, idempotency_key), json=body)
        external_id = (answer or {}).get("id")
        created = bool((answer or {}).get("created", True))
        if not external_id:
            # 204: someone upserted the same key between our find and our call; read its id.
            again = self.find(entity, idempotency_key)
            if again is None:
                raise TerminalConnectorError(
                    f"{self.slug} accepted the upsert of {sobject} but the record cannot be read back",
                    system_slug=self.slug,
                )
            external_id, created = again["id"], False
        return UpsertResult(external_id=str(external_id), created=created, payload={**body, "Id": external_id})

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        """PATCH the fields that differ onto the record by its Id (an invoice's status goes onto its Account and
        Opportunity, as on create); a record deleted in Salesforce raises TargetRecordGoneError."""
        if entity == "invoice" and entity not in (self.settings.get("object_names") or {}):
            return self.invoice_status_apply(payload)
        sobject = self.sobject(entity)
        path = f"{self.data_path}/sobjects/{sobject}/{quote(external_id)}"
        found = self.call_json("GET", path, missing_ok=True)
        if found is None:
            raise TargetRecordGoneError(
                f"{self.slug} has no {sobject} {external_id} any more (deleted or merged in Salesforce)",
                status_code=404,
                system_slug=self.slug,
                hint="Re-create the record, or skip the update if it was deleted on purpose.",
            )
        current = self._normalise(found)
        body = changed_fields(
            current, {k: v for k, v in payload.items() if k not in ("Id", "attributes", self.external_id_field)}
        )
        if body:
            self.call("PATCH", path, json=body)
        return UpsertResult(external_id=str(external_id), created=False, payload={**current, **body})

    def update_record(self, entity: str, external_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH the fields of one record by its Id that differ (not a pipeline operation: workflows use it to
        write back, for example the project number on a won opportunity); returns the record as it now is."""
        found = self.get(entity, external_id)
        body = changed_fields(found, {k: v for k, v in changes.items() if k not in ("Id", "attributes")})
        if body:
            self.call("PATCH", f"{self.data_path}/sobjects/{self.sobject(entity)}/{quote(external_id)}", json=body)
        return {**found, **body}

    def void(self, entity: str, external_id: str) -> None:
        """Delete the record (Salesforce keeps it in the recycle bin); already deleted is fine."""
        self.call("DELETE", f"{self.data_path}/sobjects/{self.sobject(entity)}/{quote(external_id)}", missing_ok=True)

    def _soql(self, sobject: str, since: str | None) -> str:
        configured = (self.settings.get("query_fields") or {}).get(sobject) or SALESFORCE_FIELDS.get(sobject, ["Name"])
        fields = list(dict.fromkeys([*SALESFORCE_SYSTEM_FIELDS, *configured, self.external_id_field]))
        where = ""
        if since:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})", since):
                raise TerminalConnectorError(f"Invalid Salesforce cursor time {since!r}", system_slug=self.slug)
            # >= and not >: records sharing the last timestamp read may not all have been read yet;
            # the ones that were are skipped by (LastModifiedDate, Id) in fetch_changes.
            where = f" WHERE LastModifiedDate >= {since}"
        # Every part is validated: field and object names by the schema's pattern, the time by the regex above.
        return f"SELECT {', '.join(fields)} FROM {sobject}{where} ORDER BY LastModifiedDate, Id"  # noqa: S608

    def fetch_changes(self, entity: str, cursor: str | None) -> ChangeBatch:
        """SOQL changed since the cursor, ordered by LastModifiedDate and Id, following nextRecordsUrl.

        The cursor is {"since", "last_id", "next"}: the (LastModifiedDate, Id) of the last record read and
        the nextRecordsUrl. A new pass, or one whose query locator expired (Salesforce keeps them 15
        minutes), queries LastModifiedDate >= since and skips what is at or before (since, last_id), so
        records sharing a timestamp are neither skipped nor repeated.
        """
        sobject = self.sobject(entity)
        state = cursor_decode(cursor, system_slug=self.slug)
        headers = {"Sforce-Query-Options": f"batchSize={self.page_size(200)}"}
        body = None
        if state.get("next"):
            try:
                body = self.call_json("GET", str(state["next"]), headers=headers)
            except TerminalConnectorError as exc:
                if isinstance(exc, CredentialsRefusedError) or exc.status_code not in (400, 404):
                    raise
                body = None  # INVALID_QUERY_LOCATOR: the locator expired, query again from the watermark
        if body is None:
            soql = self._soql(sobject, state.get("since"))
            body = self.call_json("GET", f"{self.data_path}/query", params={"q": soql}, headers=headers)
        raw = [self._normalise(row) for row in body.get("records", [])]
        rows = [row for row in raw if not self._already_read(row, state)]
        next_state = {"since": state.get("since"), "last_id": state.get("last_id")}
        if raw:
            next_state = {"since": raw[-1].get("LastModifiedDate"), "last_id": raw[-1].get("Id")}
        next_url = None if body.get("done", True) else body.get("nextRecordsUrl")
        next_state["next"] = next_url
        return ChangeBatch(
            records=rows,
            next_cursor=cursor_encode(next_state) if next_state["since"] else None,
            has_more=bool(next_url),
        )

    @staticmethod
    def _already_read(row: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
        since, stamp = state.get("since"), row.get("LastModifiedDate")
        if not since or not stamp:
            return False
        current, mark = _parse_time(str(stamp)), _parse_time(str(since))
        return current < mark or (current == mark and str(row.get("Id", "")) <= str(state.get("last_id") or ""))


HARVEST_RESOURCES = {
    "time_entry": "time_entries",
    "expense": "expenses",
    "project": "projects",
    "resource": "users",
    "milestone": "milestones",
    "client": "clients",
}


@register_connector
class HarvestPsaConnector(RestConnector):
    """Harvest v2: bearer token and account id, page-number lists with updated_since, Idempotency-Key on create."""

    name = "harvest_psa"
    label = "Harvest (PSA)"
    role_hint = SystemRole.PSA
    description = "Harvest API v2: projects, time entries and expenses, bearer token plus account id."
    sensitive_parameters = frozenset({"access_token"})
    capabilities = frozenset({"health_check", "fetch_changes", "get", "find", "upsert", "update", "void"})
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["account_id"],
        "properties": {
            "account_id": {"type": "string", "pattern": r"^\d+$", "description": "Harvest-Account-Id header."},
            "contact_email": {
                "type": "string",
                "format": "email",
                "description": "Harvest asks for a contact address in the User-Agent.",
            },
            "page_size": {"type": "integer", "minimum": 1, "maximum": 2000, "default": 100},
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
    }

    def auth(self) -> httpx.Auth | None:
        return BearerAuth(self._credential("access_token"))

    def auth_mode(self) -> str:
        return "bearer"

    def extra_headers(self) -> dict[str, str]:
        headers = {"Harvest-Account-Id": str(self.settings.get("account_id", ""))}
        if self.settings.get("contact_email"):
            headers["User-Agent"] = f"IntegrationHub ({self.settings['contact_email']})"
        return headers

    def resource(self, entity: str) -> str:
        if entity not in HARVEST_RESOURCES:
            raise self.unknown_entity(entity, HARVEST_RESOURCES)
        return HARVEST_RESOURCES[entity]

    def get(self, entity: str, external_id: str) -> dict[str, Any]:
        record = self.call_json("GET", f"/{self.resource(entity)}/{quote(str(external_id), safe='')}")
        return with_id(record, record["id"])

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        resource = self.resource(entity)
        body = self.call_json("GET", f"/{resource}", params={"idempotency_key": idempotency_key, "per_page": 1})
        rows = body.get(resource) or []
        return with_id(rows[0], rows[0]["id"]) if rows else None

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        """Find by key; PATCH the fields that differ on a record found, else POST with Idempotency-Key."""
        resource = self.resource(entity)
        found = self.find(entity, idempotency_key)
        if found is not None:
            changes = changed_fields(found, payload)
            if not changes:
                return UpsertResult(external_id=found["id"], created=False, payload=found)
            updated = self.call_json("PATCH", f"/{resource}/{found['id']}", json=changes)
            return UpsertResult(external_id=found["id"], created=False, payload=updated)
        created = self.call_json("POST", f"/{resource}", json=payload, headers={"Idempotency-Key": idempotency_key})
        return UpsertResult(external_id=str(created["id"]), created=True, payload=created)

    def void(self, entity: str, external_id: str) -> None:
        """Delete the record (an approved time entry must be unapproved first: Harvest answers 422)."""
        self.call("DELETE", f"/{self.resource(entity)}/{quote(str(external_id), safe='')}", missing_ok=True)

    def update_record(self, entity: str, external_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH the fields that differ on one record by id (a record linked by a person carries no hub key)."""
        resource = self.resource(entity)
        found = self.get(entity, external_id)
        body = changed_fields(found, changes)
        if not body:
            return found
        record = self.call_json("PATCH", f"/{resource}/{quote(str(external_id), safe='')}", json=body)
        return with_id(record, record["id"])

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        """The fields that differ, PATCHed onto the record the hub created; gone from Harvest raises."""
        return _update_by_id(self, entity, f"/{self.resource(entity)}", external_id, payload)

    def archive(self, entity: str, external_id: str) -> dict[str, Any] | None:
        """Archive a client or project (is_active false): Harvest keeps its time; None when it is already gone."""
        resource = self.resource(entity)
        record = self.call_json(
            "PATCH", f"/{resource}/{quote(str(external_id), safe='')}", json={"is_active": False}, missing_ok=True
        )
        return with_id(record, record["id"]) if record else None

    def release_staffing(self, project_id: str) -> dict[str, Any]:
        """Release a project's staffing requests to resource managers (idempotent: releasing twice is one release)."""
        record = self.call_json("POST", f"/projects/{quote(str(project_id), safe='')}/release_staffing", json={})
        return with_id(record, record["id"])

    def approve(self, external_id: str, *, approver_id: int | None = None, approve: bool = True) -> dict[str, Any]:
        """Approve (or unapprove) a time entry; not a pipeline operation, used by the demo and the tests."""
        action = "approve" if approve else "unapprove"
        body = {"approver_id": approver_id} if approver_id is not None else {}
        record = self.call_json("POST", f"/time_entries/{quote(str(external_id), safe='')}/{action}", json=body)
        return with_id(record, record["id"])

    def fetch_changes(self, entity: str, cursor: str | None) -> ChangeBatch:
        """Records with updated_since >= the pass's watermark, page by page (Harvest orders lists by id).

        The cursor is {"since", "page", "max"}: id order keeps page N stable while records change, and the
        next pass starts from the newest updated_at seen (Harvest's updated_since is inclusive).
        """
        resource = self.resource(entity)
        state = cursor_decode(cursor, system_slug=self.slug)
        page = int(state.get("page", 1))
        params: dict[str, Any] = {"page": page, "per_page": self.page_size()}
        if state.get("since"):
            params["updated_since"] = state["since"]
        body = self.call_json("GET", f"/{resource}", params=params)
        rows = body.get(resource) or []
        watermark = state.get("max")
        for row in rows:
            watermark = newest(watermark, row.get("updated_at"))
        more = bool(body.get("next_page"))
        if more:
            next_state = {"since": state.get("since"), "page": int(body["next_page"]), "max": watermark}
        else:
            next_state = {"since": watermark or state.get("since")}
        records = [with_id(row, row["id"]) for row in rows]
        return ChangeBatch(
            records=records,
            next_cursor=cursor_encode(next_state) if next_state["since"] or more else None,
            has_more=more,
        )

    def records_list(
        self,
        entity: str,
        *,
        cursor: str | None = None,
        filters: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> ChangeBatch:
        """One page of the records of `entity` as they are now (a read for reconciliation, not a change feed).

        `filters`: `date_from` / `date_to` (Harvest's `from` / `to` on spent_date), `approval_status`, and the
        list filters Harvest takes by name (`project_id`, `user_id`, `is_active`). The cursor is the next page.
        """
        resource = self.resource(entity)
        wanted = dict(filters or {})
        params: dict[str, Any] = {
            "page": int(cursor or 1),
            "per_page": max(1, min(2000, int(page_size or self.page_size()))),
        }
        for name, harvest_name in (("date_from", "from"), ("date_to", "to")):
            if wanted.get(name):
                params[harvest_name] = str(wanted.pop(name))
        params.update({name: value for name, value in wanted.items() if value not in (None, "")})
        body = self.call_json("GET", f"/{resource}", params=params)
        rows = body.get(resource) or []
        next_page = body.get("next_page")
        return ChangeBatch(
            records=[with_id(row, row["id"]) for row in rows],
            next_cursor=str(next_page) if next_page else None,
            has_more=bool(next_page),
        )


GRAPH_GROUP_CREATE = ("displayName", "description", "visibility")
MAIL_NICKNAME_MAX = 64


def mail_nickname_for(key: str, prefix: str = "hub-") -> str:
    """A Graph mailNickname derived from an idempotency key: lower-case letters, digits and dashes, <= 64.

    Long or lossy keys get a digest suffix, so two different keys never share a workspace.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
    candidate = f"{prefix}{slug}"
    if slug and len(candidate) <= MAIL_NICKNAME_MAX and slug == key:
        return candidate
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{prefix}{slug[: MAIL_NICKNAME_MAX - len(prefix) - 13]}-{digest}".replace("--", "-")


class _SafeFormat(dict):
    def __missing__(self, key: str) -> str:
        return ""


@register_connector
class CollaborationSuiteConnector(RestConnector):
    """Microsoft Graph shape: a project's workspace is a Unified group (team), found by its mailNickname."""

    name = "collaboration_suite"
    label = "Collaboration suite"
    role_hint = SystemRole.COLLABORATION
    description = "Workspaces and channels for delivery teams (Teams/Slack/SharePoint-style REST API)."
    default_auth_mode = "oauth2"
    sensitive_parameters = AUTH_SECRETS
    capabilities = frozenset({"health_check", "get", "find", "upsert", "update", "void"})
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["auth_mode"],
        "properties": {
            "tenant_id": {"type": "string", "minLength": 1},
            "workspace_template": {"type": "string", "minLength": 1, "description": "Template for new workspaces."},
            "workspace_visibility": {"enum": ["private", "internal", "public"], "default": "private"},
            "workspace_name_pattern": {
                "type": "string",
                "default": "{client_name} - {project_name}",
                "description": "Placeholders from the canonical project.",
            },
            "mail_nickname_prefix": {
                "type": "string",
                "pattern": "^[a-z0-9-]{0,20}$",
                "default": "hub-",
                "description": "Prefix of the mailNickname derived from the idempotency key.",
            },
            "void_action": {
                "enum": ["archive", "delete"],
                "default": "archive",
                "description": "What compensation does to a workspace: archive the team, or delete the group.",
            },
            "auth_mode": AUTH_MODE,
            "api_key_header": API_KEY_HEADER,
            "token_url": TOKEN_URL,
            "scope": SCOPE,
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
        "allOf": [OAUTH2_NEEDS_TOKEN_URL],
    }

    WORKSPACE_ENTITIES = frozenset({"project"})

    def _check(self, entity: str) -> None:
        if entity not in self.WORKSPACE_ENTITIES:
            raise self.unknown_entity(entity, dict.fromkeys(self.WORKSPACE_ENTITIES))

    def mail_nickname(self, idempotency_key: str) -> str:
        return mail_nickname_for(idempotency_key, str(self.settings.get("mail_nickname_prefix", "hub-")))

    def get(self, entity: str, external_id: str) -> dict[str, Any]:
        self._check(entity)
        group = self.call_json("GET", f"/groups/{quote(external_id, safe='')}")
        return with_id({k: v for k, v in group.items() if not k.startswith("@odata")}, group["id"])

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        self._check(entity)
        nickname = self.mail_nickname(idempotency_key).replace("'", "''")
        body = self.call_json("GET", "/groups", params={"$filter": f"mailNickname eq '{nickname}'"})
        rows = body.get("value") or []
        return with_id(rows[0], rows[0]["id"]) if rows else None

    def _workspace(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        name = payload.get("displayName") or payload.get("workspace_name")
        if not name:
            values = _SafeFormat({**payload, "project_name": payload.get("project_name") or payload.get("name", "")})
            pattern = str(self.settings.get("workspace_name_pattern", "{client_name} - {project_name}"))
            name = pattern.format_map(values).strip(" -") or payload.get("name") or payload.get("code")
        if not name:
            raise TerminalConnectorError(
                "A workspace needs a name: displayName, name, or the fields of workspace_name_pattern",
                system_slug=self.slug,
            )
        visibility = str(payload.get("visibility") or self.settings.get("workspace_visibility", "private"))
        return {
            "displayName": str(name)[:256],
            "description": payload.get("description")
            or (f"Delivery workspace of {payload['code']}" if payload.get("code") else None),
            "visibility": visibility.capitalize() if visibility != "internal" else "Private",
        }

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        """Find the workspace by the mailNickname derived from the key; update it, or create the group.

        `payload["members"]` (user ids or user principal names) are added after the group exists.
        """
        self._check(entity)
        wanted = self._workspace(payload)
        found = self.find(entity, idempotency_key)
        if found is not None:
            changes = {k: v for k, v in changed_fields(found, wanted).items() if v is not None}
            if changes:
                self.call("PATCH", f"/groups/{found['id']}", json=changes)
            result = UpsertResult(external_id=found["id"], created=False, payload={**found, **changes})
        else:
            body = {
                **{k: v for k, v in wanted.items() if v is not None},
                "mailNickname": self.mail_nickname(idempotency_key),
                "mailEnabled": True,
                "securityEnabled": False,
                "groupTypes": ["Unified"],
            }
            created = self.call_json("POST", "/groups", json=body)
            result = UpsertResult(external_id=str(created["id"]), created=True, payload=created)
        if payload.get("members"):
            self.add_members(result.external_id, [str(m) for m in payload["members"]])
        return result

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        """The workspace's name, description and visibility PATCHed where they differ, members added; a group
        deleted in the suite raises TargetRecordGoneError."""
        self._check(entity)
        group = self.call_json("GET", f"/groups/{quote(external_id, safe='')}", missing_ok=True)
        if group is None:
            raise TargetRecordGoneError(
                f"{self.slug} has no workspace group {external_id} any more",
                status_code=404,
                system_slug=self.slug,
                hint="Re-create the workspace, or skip the update if it was deleted on purpose.",
            )
        changes = {k: v for k, v in changed_fields(group, self._workspace(payload)).items() if v is not None}
        if changes:
            self.call("PATCH", f"/groups/{quote(external_id, safe='')}", json=changes)
        if payload.get("members"):
            self.add_members(external_id, [str(m) for m in payload["members"]])
        return UpsertResult(external_id=str(external_id), created=False, payload={**group, **changes})

    def add_members(self, group_id: str, members: list[str]) -> list[str]:
        """Add users (ids or user principal names) to a workspace; those already in it are left alone."""
        current = self.call_json("GET", f"/groups/{quote(group_id, safe='')}/members")
        present = {str(user.get("id")) for user in current.get("value", [])} | {
            str(user.get("userPrincipalName", "")).lower() for user in current.get("value", [])
        }
        added: list[str] = []
        for member in members:
            if member in present or member.lower() in present:
                continue
            user = self.call_json("GET", f"/users/{quote(member, safe='@')}")
            if str(user["id"]) in present:
                continue
            reference = {"@odata.id": f"{self.system.base_url.rstrip('/')}/directoryObjects/{user['id']}"}
            response = client_for(self.system).request(
                "POST",
                f"/groups/{quote(group_id, safe='')}/members/$ref",
                auth=self.auth(),
                headers=self.extra_headers(),
                json=reference,
                check=False,
            )
            if response.status_code == 400 and "already exist" in response.text:
                continue  # added by an earlier attempt whose answer was lost
            self.raise_for(response)
            present.add(str(user["id"]))
            added.append(str(user["id"]))
        return added

    def delete(self, entity: str, external_id: str) -> None:
        """Delete the workspace's group (a compensation undoing its creation); already gone is fine."""
        self._check(entity)
        self.call("DELETE", f"/groups/{quote(external_id, safe='')}", missing_ok=True)

    def void(self, entity: str, external_id: str) -> None:
        """Archive the team (the default) or delete the group; a workspace already gone is voided."""
        self._check(entity)
        if self.settings.get("void_action", "archive") == "delete":
            self.call("DELETE", f"/groups/{quote(external_id, safe='')}", missing_ok=True)
        else:
            self.call("POST", f"/teams/{quote(external_id, safe='')}/archive", missing_ok=True)


ERP_RESOURCES = {
    "client": "clients",
    "project": "projects",
    "time_entry": "time-entries",
    "expense": "time-entries",
    "milestone": "billing-events",
    "billing_event": "billing-events",
    "invoice": "invoices",
}
# Posted entries cannot be edited in the ERP: a found one is the answer, a correction is a reversal.
ERP_IMMUTABLE = frozenset({"time-entries", "billing-events"})
ERP_NEEDS_ENTITY = frozenset({"clients", "projects"})


@register_connector
class SandboxErpConnector(RestConnector):
    """The sandbox ERP: cursor-paged lists, Idempotency-Key on create, reversal of posted time."""

    name = "sandbox_erp"
    label = "Sandbox ERP (simulated)"
    role_hint = SystemRole.ERP
    description = "The hub's simulated ERP for demos and tests; speaks REST and can be told to fail."
    sensitive_parameters = frozenset({"api_key", "bearer_token"})
    capabilities = frozenset(
        {"health_check", "fetch_changes", "get", "find", "upsert", "update", "upsert_batch", "void"}
    )
    # Posted entries are immutable but a negative line is accepted: a correction posts the difference.
    posts_negative_lines = True
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "company_code": {
                "type": "string",
                "pattern": "^[A-Z0-9][A-Z0-9_-]{1,19}$",
                "description": "Legal entity written on new clients and projects that do not name one.",
            },
            "auth_mode": {"enum": ["none", "api_key", "bearer"], "default": "api_key"},
            "api_key_header": API_KEY_HEADER,
            "page_size": {**PAGE_SIZE, "maximum": 1000},
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
    }

    def resource(self, entity: str) -> str:
        if entity not in ERP_RESOURCES:
            raise self.unknown_entity(entity, ERP_RESOURCES)
        return ERP_RESOURCES[entity]

    def get(self, entity: str, external_id: str) -> dict[str, Any]:
        record = self.call_json("GET", f"/{self.resource(entity)}/{quote(str(external_id), safe='')}")
        return with_id(record, record["id"])

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        body = self.call_json(
            "GET", f"/{self.resource(entity)}", params={"idempotency_key": idempotency_key, "limit": 1}
        )
        rows = body.get("results") or []
        return with_id(rows[0], rows[0]["id"]) if rows else None

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        """Find by key; a found posted entry is kept, other records get the fields that differ; else create."""
        resource = self.resource(entity)
        body = dict(payload)
        if resource in ERP_NEEDS_ENTITY and self.settings.get("company_code"):
            body.setdefault("legal_entity", self.settings["company_code"])
        found = self.find(entity, idempotency_key)
        if found is not None:
            changes = {} if resource in ERP_IMMUTABLE else changed_fields(found, body)
            if not changes:
                return UpsertResult(external_id=found["id"], created=False, payload=found)
            updated = self.call_json("PATCH", f"/{resource}/{found['id']}", json=changes)
            return UpsertResult(external_id=found["id"], created=False, payload=updated)
        created = self.call_json("POST", f"/{resource}", json=body, headers={"Idempotency-Key": idempotency_key})
        return UpsertResult(external_id=str(created["id"]), created=True, payload=created)

    def upsert_many(
        self, entity: str, items: Sequence[tuple[Mapping[str, Any], str]], *, may_exist: bool = True
    ) -> list[UpsertResult | ConnectorError]:
        """Create many time entries in one call (POST time-entries/batch), once per idempotency key (the ERP
        de-duplicates keys itself, so `may_exist` changes nothing).

        Answers one result per item, in order: an UpsertResult (created=False when the key was already used,
        so a re-sent batch creates nothing twice) or the TerminalConnectorError of an item the ERP refused.
        A failure of the whole call (timeout, 5xx, 429) raises its classified ConnectorError; other entities
        fall back to one upsert per item.
        """
        resource = self.resource(entity)
        if resource != "time-entries":
            return self.upsert_each(entity, items)
        if not items:
            return []
        body = {"items": [{**payload, "idempotency_key": key} for payload, key in items]}
        answer = self.call_json("POST", f"/{resource}/batch", json=body)
        return self.batch_answer(entity, len(items), answer, lambda record: str(record["id"]))

    def batches(self, entity: str) -> bool:
        """Whether upsert_batch sends one call for many records of this entity (time entries do)."""
        return self.resource(entity) == "time-entries"

    def upsert_batch(
        self, entity: str, items: Sequence[tuple[Mapping[str, Any], str]], *, may_exist: bool = True
    ) -> Sequence[UpsertResult | Exception]:
        """The connector contract's batch operation: `upsert_many`, one result or refusal per item, in order
        (the ERP de-duplicates keys itself, so `may_exist` changes nothing)."""
        return self.upsert_many(entity, items)

    def update_record(self, entity: str, external_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH the fields that differ on one record by id (a record linked by a person carries no hub key)."""
        resource = self.resource(entity)
        found = self.get(entity, external_id)
        body = changed_fields(found, changes)
        if not body:
            return found
        record = self.call_json("PATCH", f"/{resource}/{quote(str(external_id), safe='')}", json=body)
        return with_id(record, record["id"])

    def updates(self, entity: str) -> bool:
        """Posted time entries and billing events cannot change: a correction is a reversal and a new line."""
        return self.resource(entity) not in ERP_IMMUTABLE

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        """The fields that differ, PATCHed onto a client, project or invoice; gone from the ERP raises."""
        resource = self.resource(entity)
        if resource in ERP_IMMUTABLE:
            raise ConnectorCapabilityError(
                f"The sandbox ERP cannot change a posted {entity}; post a reversal and a new line instead."
            )
        body = dict(payload)
        if resource in ERP_NEEDS_ENTITY and self.settings.get("company_code"):
            body.setdefault("legal_entity", self.settings["company_code"])
        return _update_by_id(self, entity, f"/{resource}", external_id, body)

    def void(self, entity: str, external_id: str) -> None:
        """Reverse a time entry, close a project, deactivate a client, delete a draft invoice."""
        resource = self.resource(entity)
        path = f"/{resource}/{quote(str(external_id), safe='')}"
        if resource == "time-entries":
            self.call("POST", f"{path}/reverse")  # idempotent in the ERP: once per entry
        elif resource == "projects":
            self.call("PATCH", path, json={"status": "closed"})
        elif resource == "clients":
            self.call("PATCH", path, json={"status": "inactive"})
        elif resource == "invoices":
            self.call("DELETE", path, missing_ok=True)
        else:
            raise ConnectorCapabilityError(
                f"The sandbox ERP cannot void a posted {entity}; post a negative billing event instead."
            )

    def accounting_periods(self) -> list[dict[str, Any]]:
        """Every accounting period of the ERP (all its pages), as the hub's period pull reads them:
        {external_id, name, legal_entity, start_date, end_date, state} with state open, closed or locked."""
        periods: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": self.page_size()}
        while True:
            body = self.call_json("GET", "/periods", params=params)
            for row in body.get("results") or []:
                periods.append(
                    {
                        "external_id": str(row["id"]),
                        "name": str(row.get("name") or ""),
                        "legal_entity": str(row.get("legal_entity") or ""),
                        "start_date": str(row.get("start_date") or ""),
                        "end_date": str(row.get("end_date") or ""),
                        "state": str(row.get("status") or ""),
                    }
                )
            if not body.get("has_more") or not body.get("next_cursor"):
                return periods
            params = {"limit": self.page_size(), "cursor": body["next_cursor"]}

    def _with_references(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Invoices with `client_ref` and `project_ref`: the external refs (the CRM's ids) of their client and
        project, read once per page for each distinct client and project."""
        refs: dict[tuple[str, Any], str | None] = {}
        for resource, key in (("clients", "client_id"), ("projects", "project_id")):
            for record_id in {row.get(key) for row in rows if row.get(key) is not None}:
                found = self.call_json("GET", f"/{resource}/{quote(str(record_id), safe='')}", missing_ok=True)
                refs[(resource, record_id)] = (found or {}).get("external_ref") or None
        return [
            {
                **row,
                "client_ref": refs.get(("clients", row.get("client_id"))),
                "project_ref": refs.get(("projects", row.get("project_id"))),
            }
            for row in rows
        ]

    def fetch_changes(self, entity: str, cursor: str | None) -> ChangeBatch:
        """One page ordered by (updated_at, id) after the ERP's own cursor; deleted records come too. Invoices
        carry the external refs of their client and project, so the CRM records they belong to are found."""
        resource = self.resource(entity)
        state = cursor_decode(cursor, system_slug=self.slug)
        params: dict[str, Any] = {"limit": self.page_size(), "include_deleted": "true"}
        if state.get("cursor"):
            params["cursor"] = state["cursor"]
        elif state.get("since"):
            params["updated_since"] = state["since"]
        body = self.call_json("GET", f"/{resource}", params=params)
        rows = body.get("results") or []
        if resource == "invoices":
            rows = self._with_references(rows)
        next_value = body.get("next_cursor") or state.get("cursor")
        next_state = {"cursor": next_value} if next_value else dict(state)
        return ChangeBatch(
            records=[with_id(row, row["id"]) for row in rows],
            next_cursor=cursor_encode(next_state) if next_state else None,
            has_more=bool(body.get("has_more")),
        )

    def records_list(
        self,
        entity: str,
        *,
        cursor: str | None = None,
        filters: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> ChangeBatch:
        """One page of the live records of `entity` as the ERP holds them now (deleted ones left out), for
        reconciliation: `filters` are the ERP's list filters (`project_id`, `source_ref`, `status`,
        `legal_entity`); the cursor is the ERP's own keyset cursor."""
        resource = self.resource(entity)
        params: dict[str, Any] = {
            "limit": max(1, min(1000, int(page_size or self.page_size()))),
            **{name: value for name, value in (filters or {}).items() if value not in (None, "")},
        }
        if cursor:
            params["cursor"] = cursor
        body = self.call_json("GET", f"/{resource}", params=params)
        rows = body.get("results") or []
        more = bool(body.get("has_more")) and bool(rows)
        return ChangeBatch(
            records=[with_id(row, row["id"]) for row in rows],
            next_cursor=str(body.get("next_cursor")) if more and body.get("next_cursor") else None,
            has_more=more,
        )


@register_connector
class AnalyticsSinkConnector(RestConnector):
    name = "analytics_sink"
    label = "Analytics sink"
    role_hint = SystemRole.ANALYTICS
    description = "Append-only sink for the warehouse: canonical records are posted in batches to a dataset."
    sensitive_parameters = frozenset({"api_key", "bearer_token"})
    capabilities = frozenset({"health_check", "find", "upsert"})
    # An append-only event log: every delivery is an event of its own (stored once per key), not a new version
    # of a record, so record identity does not apply.
    record_identity = False
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["dataset"],
        "properties": {
            "dataset": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "table_prefix": {"type": "string", "pattern": r"^[A-Za-z0-9_]*$", "default": "hub_"},
            "batch_size": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 500},
            "auth_mode": {"enum": ["none", "api_key", "bearer"], "default": "bearer"},
            "api_key_header": API_KEY_HEADER,
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
    }
    default_auth_mode = "bearer"

    @property
    def events_path(self) -> str:
        return f"/datasets/{self.settings['dataset']}/events"

    def table(self, entity: str) -> str:
        return f"{self.settings.get('table_prefix', 'hub_')}{entity}"

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        body = self.call_json("GET", self.events_path, params={"idempotency_key": idempotency_key, "limit": 1})
        rows = body.get("results") or []
        return with_id(rows[0], rows[0]["id"]) if rows else None

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        """Append one event (the record as the flow delivered it) to the dataset's table; the warehouse keeps
        one event per idempotency key, so a retried or replayed delivery is stored once."""
        body = {"table": self.table(entity), "record": payload}
        response = self.call("POST", self.events_path, json=body, headers={"Idempotency-Key": idempotency_key})
        assert response is not None
        try:
            answer = response.json()
            external_id = str(answer["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TerminalConnectorError(
                f"{self.slug} accepted the event but answered without its id", system_slug=self.slug
            ) from exc
        # 200: the warehouse already held an event with this key (a retry); 201: stored now.
        return UpsertResult(external_id=external_id, created=response.status_code == 201, payload=answer)


# Tryton speaks JSON-RPC rather than REST, and the CSV drop reads files: each has its own module.
from connectors.csv_drop import CsvDropConnector  # noqa: E402
from connectors.tryton import TrytonConnector  # noqa: E402

register_connector(TrytonConnector)
register_connector(CsvDropConnector)
