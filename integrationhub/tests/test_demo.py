from django.contrib.auth import authenticate

from connectors.models import ConnectedSystem
from governance.models import LegalEntity, OwnershipRule, RateCard, SyncPolicy
from governance.selectors import rate_for
from integrationhub.demo import DEMO_LOGINS, demo_setup
from sandbox.models import SandboxSetting


def test_demo_setup_builds_the_firm_once_and_logs_in_every_role(db):
    # when the demo is set up twice
    demo_setup()
    again = demo_setup()

    # then the firm exists once: three entities, their systems, rate cards, ownership and five policies
    assert set(LegalEntity.objects.values_list("code", flat=True)) == {"US01", "UK01", "DE01"}
    assert ConnectedSystem.objects.filter(role="erp").count() == 3
    assert ConnectedSystem.objects.get(slug="erp-uk").connector_type == "tryton_erp"
    assert RateCard.objects.count() == 4
    assert OwnershipRule.objects.count() == 5
    assert SyncPolicy.objects.count() == 5
    assert "rate cards created: 0" in again.summary[-1]
    # and the sandbox systems carry the demo credentials the sandboxes were seeded with
    crm = ConnectedSystem.objects.get(slug="crm")
    assert crm.has_credentials and crm.has_webhook_secret
    erp_token = SandboxSetting.objects.get(system="erp").api_token
    assert ConnectedSystem.objects.get(slug="erp-us").credentials == {"api_key": erp_token}

    # and the client override beats the entity default for its client only
    uk = LegalEntity.objects.get(code="UK01")
    from datetime import date

    on = date(date.today().year, 6, 1)
    assert rate_for(legal_entity=uk, role="Manager", on_date=on).bill_rate == 340
    assert rate_for(legal_entity=uk, role="Manager", on_date=on, client="client-contoso-retail").bill_rate == 310

    # and every printed login works
    for login in DEMO_LOGINS:
        assert authenticate(username=login.username, password=login.password) is not None
