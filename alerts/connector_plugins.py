"""The chat-webhook connector: Slack- and Teams-compatible incoming webhooks, the alerts' chat channel.

An alert is an event, not a record: each post is one message in the channel (`record_identity` False), and the
alert's dedupe key, not the channel, is what keeps an alert from being posted twice.
"""

from __future__ import annotations

import time
from typing import Any

from alerts.choices import ChatFlavour
from alerts.models import CHAT_WEBHOOK_CONNECTOR
from connectors.base import HealthResult, UpsertResult
from connectors.builtin import RestConnector
from connectors.http import client_for
from connectors.registry import register_connector

ALERT_ENTITY = "alert"


def chat_message(flavour: str, *, title: str, text: str, link: str = "") -> dict[str, Any]:
    """The body an incoming webhook of `flavour` takes for one alert."""
    if flavour == ChatFlavour.TEAMS:
        card: dict[str, Any] = {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": title[:150],
            "title": title,
            "text": text.replace("\n", "<br>"),
        }
        if link:
            card["potentialAction"] = [
                {"@type": "OpenUri", "name": "Open in the hub", "targets": [{"os": "default", "uri": link}]}
            ]
        return card
    return {"text": f"*{title}*\n{text}" + (f"\n<{link}|Open in the hub>" if link else "")}


@register_connector
class ChatWebhookConnector(RestConnector):
    """Posts alerts to a chat channel's incoming webhook. The webhook's path holds its secret, so it lives in
    the encrypted credentials (`webhook_path`); the system's base URL is the scheme and host only."""

    name = CHAT_WEBHOOK_CONNECTOR
    label = "Chat webhook (Slack- or Teams-compatible)"
    role_hint = ""
    description = "Alerts posted to a chat channel's incoming webhook: Slack's {'text': …} or Teams' MessageCard."
    default_auth_mode = "none"
    sensitive_parameters = frozenset({"webhook_path"})
    capabilities = frozenset({"health_check", "upsert"})
    record_identity = False
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "flavour": {
                "type": "string",
                "enum": [choice.value for choice in ChatFlavour],
                "default": ChatFlavour.SLACK.value,
                "description": "The payload the webhook takes: slack ({'text': …}) or teams (MessageCard).",
            },
            "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 120},
        },
    }

    def _path(self) -> str:
        return "/" + self._credential("webhook_path").lstrip("/")

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        """Post one alert (`payload`: title, text, link) in the system's flavour."""
        if entity != ALERT_ENTITY:
            raise self.unknown_entity(entity, {ALERT_ENTITY: {}})
        body = chat_message(
            str(self.settings.get("flavour", ChatFlavour.SLACK)),
            title=str(payload.get("title", "")),
            text=str(payload.get("text", "")),
            link=str(payload.get("link", "")),
        )
        # Slack answers "ok" and Teams "1", neither of them JSON: the status code is the answer.
        self.call("POST", self._path(), json=body, headers={"X-Hub-Alert-Key": idempotency_key})
        return UpsertResult(external_id=idempotency_key, created=True, payload=body)

    def health_check(self) -> HealthResult:
        """A HEAD to the webhook's host: posting would put a message in the channel, so only reachability is
        tested; any HTTP answer means the host is there."""
        started = time.perf_counter()
        response = client_for(self.system).request("HEAD", "/", check=False)
        return HealthResult(
            ok=True,
            status_code=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            message=f"The webhook's host answered HEAD / with {response.status_code}; no message was posted.",
        )
