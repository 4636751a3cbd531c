"""OpenAPI description of the inbound webhook endpoint.

The endpoint is a plain Django view (see sync.api.views.inbound_webhook), so drf-spectacular does not see
it; this postprocessing hook adds its operation to the schema, next to the DRF ones.
"""

from __future__ import annotations

from typing import Any

from integrationhub.api.schema import problem_response

INBOUND_PATH = "/api/v1/inbound/{system_slug}/{event_type}/"


def _header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": {"type": "string"},
        "description": description,
    }


INBOUND_OPERATION: dict[str, Any] = {
    "operationId": "inbound_event_create",
    "summary": "Post an inbound event from a connected system",
    "description": (
        "Stores the event as one message (once per idempotency key) and answers at once; the pipeline maps, "
        "validates and delivers it in the background. Signed with the system's webhook secret in the Standard "
        "Webhooks scheme: `webhook-signature` is `v1,<base64 HMAC-SHA256 of id.timestamp.body>`. Each system "
        "has an inbound budget (its `inbound_rate`, else `HUB_INBOUND_RATE`): above it the answer is 429 with "
        "`Retry-After` and nothing is stored. Only events with a valid signature spend the budget. A body that JSON "
        "allows but the hub cannot store (`NaN`, `Infinity`, `1e999`, a lone surrogate) or an `X-Source-Sequence` "
        "that is no 64-bit integer is refused with 400 naming the field in `errors`."
    ),
    "tags": ["inbound"],
    "security": [{}],
    "parameters": [
        {
            "name": "system_slug",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
            "description": "The connected system's slug.",
        },
        {
            "name": "event_type",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "`<canonical entity>.<verb>`, e.g. `client.updated` or `opportunity.closed_won`.",
        },
        _header("webhook-id", "The event's unique id; also its idempotency key.", required=True),
        _header("webhook-timestamp", "Unix seconds when it was signed (5 minutes tolerance).", required=True),
        _header("webhook-signature", "`v1,<signature>` (several separated by spaces).", required=True),
        _header("X-Correlation-ID", "Carried through every stage; else the trace id of `traceparent`, else new."),
        _header("traceparent", "W3C trace context; its trace id becomes the correlation id."),
        _header("X-Source-Sequence", "The source's sequence number, for ordering updates of one record."),
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True, "description": "The source record."}
            }
        },
    },
    "responses": {
        "202": {
            "description": "Stored; the pipeline takes it from here.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InboundEventAccepted"}}},
        },
        "200": {
            "description": "A repeat of an event already stored: nothing new is stored.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InboundEventAccepted"}}},
        },
        "400": problem_response("400"),
        "401": {**problem_response("401"), "description": "Missing, stale or wrong signature."},
        "404": {**problem_response("404"), "description": "No connected system has this slug."},
        "413": problem_response("413"),
        "423": {**problem_response("400"), "description": "The system is paused; resend after it is resumed."},
        "429": {**problem_response("429"), "description": "The system's inbound budget is spent; nothing stored."},
        "503": {
            **problem_response("503"),
            "description": "The hub's database did not answer; nothing stored. Resend after `Retry-After` seconds.",
            "headers": {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before resending."}
            },
        },
    },
}

ACCEPTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message_id": {"type": "integer"},
        "correlation_id": {"type": "string"},
        "duplicate": {"type": "boolean", "description": "Present (true) when the event was stored before."},
    },
    "required": ["message_id", "correlation_id"],
}


def inbound_webhook_hook(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add the inbound webhook operation and its answer's schema."""
    result.setdefault("paths", {})[INBOUND_PATH] = {"post": INBOUND_OPERATION}
    result.setdefault("components", {}).setdefault("schemas", {})["InboundEventAccepted"] = ACCEPTED_SCHEMA
    return result
