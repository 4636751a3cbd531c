"""The connector types that ship with the hub.

Each declares a realistic parameter schema for `ConnectedSystem.settings` and the secret parameters
that belong in `credentials`. For now every type implements `health_check` only, and says so in its
capabilities; the data operations arrive with the sync engine and are refused until then.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from connectors.base import Connector, HealthResult
from connectors.choices import SystemRole
from connectors.http import ApiKeyAuth, BearerAuth, OAuth2ClientCredentialsAuth, client_for
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


class RestConnector(Connector):
    """Shared plumbing of the HTTP/JSON connectors: auth from the credentials and a GET health check."""

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
            return OAuth2ClientCredentialsAuth(
                token_url=self.token_url(),
                client_id=self._credential("client_id"),
                client_secret=self._credential("client_secret"),
                scope=str(self.settings.get("scope", "")),
                cache_namespace=self.system.slug,
            )
        return None

    def extra_headers(self) -> dict[str, str]:
        return {}

    def health_check(self) -> HealthResult:
        """GET the health path; 2xx is healthy, anything else raises the classified connector error."""
        path = str(self.settings.get("health_path", "/health"))
        # A health endpoint is often public; only authenticate when credentials were given.
        auth = self.auth() if self.credentials else None
        started = time.perf_counter()
        response = client_for(self.system).request("GET", path, auth=auth, headers=self.extra_headers())
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        return HealthResult(
            ok=True,
            status_code=response.status_code,
            duration_ms=duration_ms,
            message=f"GET {path} answered {response.status_code} {response.reason_phrase}",
        )


@register_connector
class GenericRestConnector(RestConnector):
    name = "generic_rest"
    label = "Generic REST API"
    role_hint = ""
    description = "Any JSON-over-HTTP API: one endpoint per canonical entity, configurable auth and pagination."
    sensitive_parameters = AUTH_SECRETS
    capabilities = frozenset({"health_check"})
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
                    "results_path": {
                        "type": "string",
                        "description": "Dotted path of the record list in a list response, e.g. data.items.",
                    },
                    "idempotency_header": {"type": "string", "default": "Idempotency-Key"},
                    "upsert_method": {"enum": ["POST", "PUT", "PATCH"], "default": "POST"},
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
                },
            },
        },
    }


@register_connector
class SalesforceCrmConnector(RestConnector):
    name = "salesforce_crm"
    label = "Salesforce CRM"
    role_hint = SystemRole.CRM
    description = "Salesforce REST API with OAuth2; upserts by an external-id field."
    default_auth_mode = "oauth2"
    sensitive_parameters = frozenset({"client_id", "client_secret", "username", "password", "security_token"})
    capabilities = frozenset({"health_check"})
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
                "additionalProperties": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]*$"},
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


@register_connector
class HarvestPsaConnector(RestConnector):
    name = "harvest_psa"
    label = "Harvest (PSA)"
    role_hint = SystemRole.PSA
    description = "Harvest API v2: projects, time entries and expenses, bearer token plus account id."
    sensitive_parameters = frozenset({"access_token"})
    capabilities = frozenset({"health_check"})
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

    def extra_headers(self) -> dict[str, str]:
        headers = {"Harvest-Account-Id": str(self.settings.get("account_id", ""))}
        if self.settings.get("contact_email"):
            headers["User-Agent"] = f"IntegrationHub ({self.settings['contact_email']})"
        return headers


@register_connector
class CollaborationSuiteConnector(RestConnector):
    name = "collaboration_suite"
    label = "Collaboration suite"
    role_hint = SystemRole.COLLABORATION
    description = "Workspaces and channels for delivery teams (Teams/Slack/SharePoint-style REST API)."
    default_auth_mode = "oauth2"
    sensitive_parameters = AUTH_SECRETS
    capabilities = frozenset({"health_check"})
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
            "auth_mode": AUTH_MODE,
            "api_key_header": API_KEY_HEADER,
            "token_url": TOKEN_URL,
            "scope": SCOPE,
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
        "allOf": [OAUTH2_NEEDS_TOKEN_URL],
    }


@register_connector
class SandboxErpConnector(RestConnector):
    name = "sandbox_erp"
    label = "Sandbox ERP (simulated)"
    role_hint = SystemRole.ERP
    description = "The hub's simulated ERP for demos and tests; speaks REST and can be told to fail."
    sensitive_parameters = frozenset({"api_key", "bearer_token"})
    capabilities = frozenset({"health_check"})
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "company_code": {"type": "string", "pattern": "^[A-Z0-9][A-Z0-9_-]{1,19}$"},
            "auth_mode": {"enum": ["none", "api_key", "bearer"], "default": "api_key"},
            "api_key_header": API_KEY_HEADER,
            "health_path": HEALTH_PATH,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
    }


@register_connector
class AnalyticsSinkConnector(RestConnector):
    name = "analytics_sink"
    label = "Analytics sink"
    role_hint = SystemRole.ANALYTICS
    description = "Append-only sink for the warehouse: canonical records are posted in batches to a dataset."
    sensitive_parameters = frozenset({"api_key", "bearer_token"})
    capabilities = frozenset({"health_check"})
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


# Tryton speaks JSON-RPC rather than REST; its connector lives in its own module.
from connectors.tryton import TrytonConnector  # noqa: E402

register_connector(TrytonConnector)
