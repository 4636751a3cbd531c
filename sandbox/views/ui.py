"""The sandbox CRM's small UI: a list of opportunities with a "Mark closed won" button (sends the webhook)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from sandbox import selectors, services
from sandbox.choices import CrmObject, SandboxSystem
from sandbox.models import SandboxWebhookDelivery


@staff_member_required
def crm_opportunities(request: HttpRequest) -> HttpResponse:
    opportunities = selectors.records(system=SandboxSystem.CRM, object_type=CrmObject.OPPORTUNITY).order_by(
        "-updated_at"
    )
    accounts = {
        a.external_id: a.data.get("Name")
        for a in selectors.records(system=SandboxSystem.CRM, object_type=CrmObject.ACCOUNT)
    }
    rows = [
        {
            "id": o.external_id,
            "name": o.data.get("Name"),
            "account": accounts.get(o.data.get("AccountId") or "", ""),
            "stage": o.data.get("StageName"),
            "amount": o.data.get("Amount"),
            "currency": o.data.get("CurrencyIsoCode") or "",
            "closed_won": o.data.get("IsWon", False),
            "updated_at": o.updated_at,
        }
        for o in opportunities
    ]
    context = {
        "rows": rows,
        "deliveries": SandboxWebhookDelivery.objects.filter(system=SandboxSystem.CRM)[:10],
        "webhook_url": services.sandbox_setting_ensure(system=SandboxSystem.CRM).webhook_url,
    }
    return render(request, "sandbox/crm_opportunities.html", context)


@staff_member_required
@require_POST
def crm_opportunity_close_won(request: HttpRequest, record_id: str) -> HttpResponse:
    try:
        record = services.crm_opportunity_close_won(external_id=record_id)
    except services.HubNotFoundError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, f"“{record.data.get('Name')}” is Closed Won; the webhook is on its way.")
    return redirect("sandbox:crm-ui-opportunities")
