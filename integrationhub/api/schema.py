"""OpenAPI extensions: how the schema describes the hub's API key authentication."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "integrationhub.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>` (or the X-Api-Key header); the key's scopes and its owner's role apply.",
        }


class AnonymousBudgetAuthenticationScheme(OpenApiAuthenticationExtension):
    """Spends the anonymous budget and authenticates nobody: no security scheme to document."""

    target_class = "integrationhub.authentication.AnonymousBudgetAuthentication"
    name: list[str] = []

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return []

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return []


# --- error answers ------------------------------------------------------------------------------------------

PROBLEM_COMPONENT = "Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details: every error the API answers.",
    "properties": {
        "type": {"type": "string", "description": "A URI naming the kind of problem."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "errors": {
            "type": "array",
            "description": "Field errors, each naming its field path (e.g. `lines[0].bill_rate`).",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "hint": {"type": "string", "description": "What to do next."},
    },
    "required": ["type", "title", "status", "detail"],
}
ERROR_DESCRIPTIONS = {
    "400": "The request is malformed: a field, query parameter or the JSON body is not valid.",
    "401": "No credentials, or an unknown, expired or revoked API key.",
    "403": "The role or the API key's scope does not allow this call.",
    "404": "No such record (or one outside the caller's legal-entity scope).",
    "409": "The change conflicts with the record's current state.",
    "413": "The request body is larger than the hub accepts.",
    "415": "The request's content type is not accepted.",
    "422": "The request is well-formed but the hub cannot act on it; `errors` names the fields.",
    "429": "Too many calls: wait the seconds in Retry-After.",
}
READ_ERRORS = ("400", "401", "403", "404", "422", "429")
WRITE_ERRORS = (*READ_ERRORS, "409", "413", "415")
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})


def problem_response(code: str) -> dict[str, Any]:
    """The OpenAPI response object of an error answer: problem+json with the shared Problem schema."""
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS.get(code, "An error."),
        "content": {"application/problem+json": {"schema": {"$ref": f"#/components/schemas/{PROBLEM_COMPONENT}"}}},
    }
    if code == "429":
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before calling again."}
        }
    return response


def problem_responses_hook(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every operation documents the error answers it can give.

    The exception handler turns every error into problem+json, so the schema says so once here instead of
    in every view; an operation's own description of a code (a file drop's 422 report) is kept.
    """
    result.setdefault("components", {}).setdefault("schemas", {})[PROBLEM_COMPONENT] = PROBLEM_SCHEMA
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = WRITE_ERRORS if method in WRITE_METHODS else READ_ERRORS
            for code in codes:
                operation["responses"].setdefault(code, problem_response(code))
    return result
