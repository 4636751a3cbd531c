"""What starts the workflows: the sync engine's follow-up event for every processed message.

A message has gone through the pipeline (mapped, validated, delivered to its routes or to none); the
subscriber below looks at what it is and starts the flow it belongs to. Webhooks and scheduled pulls of the
same record (a poll schedule of the CRM's accounts or opportunities, Sync → Poll schedules) arrive as messages
alike, so both start the flows the same way, and the runs' business keys make
a second message of the same record start nothing new (the client master re-runs for an update instead).
"""

from __future__ import annotations

from connectors.choices import SystemRole
from governance.choices import Flow
from sync.choices import EVENT_MESSAGE_DELIVERED
from sync.models import Message
from sync.services import subscribe
from workflows.client_master import client_master_start_from_message
from workflows.opportunity_to_project import opportunity_start_from_message


# Only messages without a route: a routed message is a plain sync an analyst chose instead of the flows.
@subscribe(EVENT_MESSAGE_DELIVERED, unrouted_only=True)
def workflows_on_message_delivered(message_id: int) -> None:
    """Start the client master for a CRM account, and the saga for a closed-won opportunity."""
    message = Message.objects.select_related("system", "legal_entity").filter(pk=message_id).first()
    if message is None or message.system.role != SystemRole.CRM or not message.canonical_payload:
        return
    if message.deliveries.exists():
        # Routed by the engine to its targets: an analyst chose a plain sync for these records, not the flows
        # (the flows write the ERP, PSA and workspace records themselves, so both would create them twice).
        return
    flow = {"client": Flow.CLIENT_MASTER, "opportunity": Flow.OPPORTUNITY_TO_PROJECT}.get(message.entity)
    if flow is None:
        return
    # No route stamped the message with a flow: the flow that acts on it does, so KPIs and the queue count it.
    Message.objects.filter(pk=message.pk, flow="").update(flow=flow)
    if flow == Flow.CLIENT_MASTER:
        client_master_start_from_message(message=message)
    else:
        opportunity_start_from_message(message=message)
