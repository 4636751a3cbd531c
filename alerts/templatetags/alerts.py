"""`{% item_alerts item %}`: who an exception item alerted, how and when (on the item page)."""

from __future__ import annotations

from typing import Any

from django import template

from alerts.selectors import item_alerts

register = template.Library()


@register.inclusion_tag("alerts/item_alerts.html")
def item_alerts_panel(item: Any) -> dict[str, Any]:
    return {"alerts": item_alerts(item)}
