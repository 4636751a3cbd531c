"""Client master: CRM accounts to ERP parties and PSA clients, idempotent, with duplicate detection."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import PermissionDenied

from exception_queue.actions import item_action_perform
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from governance.choices import Flow
from sandbox.choices import ErpObject, PsaObject, SandboxSystem
from sync.models import CrossReference, Message
from workflows.choices import DirectorySource, RunStatus
from workflows.client_master import (
    ClientMasterError,
    DuplicateSuspectHeld,
    client_directory_entry_save,
    client_domain,
    client_duplicate_candidates,
    client_master_ensure,
    client_name_key,
    client_tax_key,
)
from workflows.models import ClientDirectoryEntry, WorkflowRun
from workflows.tests.conftest import wait_for
from workflows.tests.sandbox_data import account_create, account_event, erp_records, psa_records, sandbox_record


def _run(account_id: str) -> WorkflowRun | None:
    return WorkflowRun.objects.filter(flow=Flow.CLIENT_MASTER, business_key=f"crm:account:{account_id}").first()


def _settled(account_id: str, *, erp_attempts: int = 1) -> WorkflowRun | None:
    run = _run(account_id)
    if run is None or run.status == RunStatus.RUNNING:
        return None
    if (
        run.status == RunStatus.COMPLETED
        and not run.steps.filter(name="erp_client", attempts__gte=erp_attempts).exists()
    ):
        return None
    return run


def test_name_keys_ignore_case_punctuation_and_legal_suffixes():
    # given names that differ only in case, punctuation and legal form, then they share one key
    assert client_name_key("Contoso Health, Ltd.") == "contoso health"
    assert client_name_key("CONTOSO HEALTH LIMITED") == "contoso health"
    assert client_name_key("Fabrikam Energie GmbH") == "fabrikam energie"
    assert client_name_key("Müller & Söhne AG") == "muller sohne"
    # and the other keys are normalised too
    assert client_domain("https://www.Contoso.com/about") == "contoso.com"
    assert client_domain("grace@contoso.com") == "contoso.com"
    assert client_domain("someone@gmail.com") == ""
    assert client_tax_key("gb 123 456-789") == "GB123456789"


@pytest.mark.django_db
def test_a_same_domain_or_same_tax_id_is_a_suspect_and_an_unrelated_client_is_not():
    # given three known clients
    client_directory_entry_save(
        canonical_client={"id": "A1", "name": "Northwind Traders", "website": "https://northwind.example"},
        legal_entity=None,
    )
    client_directory_entry_save(
        canonical_client={"id": "A2", "name": "Blue Yonder Airlines", "registration_number": "US-99-1234567"},
        legal_entity=None,
    )
    client_directory_entry_save(canonical_client={"id": "A3", "name": "Adventure Works"}, legal_entity=None)

    # when a differently named account shares the web domain of one and the tax id of another
    by_domain = client_directory_entry_save(
        canonical_client={"id": "B1", "name": "NW Trading Group", "website": "http://www.northwind.example/"},
        legal_entity=None,
    )
    by_tax = client_directory_entry_save(
        canonical_client={"id": "B2", "name": "BYA Holdings", "registration_number": "us 99 1234567"},
        legal_entity=None,
    )
    unrelated = client_directory_entry_save(canonical_client={"id": "B3", "name": "Coho Winery"}, legal_entity=None)

    # then each finds the one it shares a key with, naming the key; the unrelated account finds none
    (domain_match,) = client_duplicate_candidates(entry=by_domain)
    assert (domain_match["canonical_id"], domain_match["matched"]) == ("A1", ["domain"])
    (tax_match,) = client_duplicate_candidates(entry=by_tax)
    assert (tax_match["canonical_id"], tax_match["matched"]) == ("A2", ["tax_id"])
    assert client_duplicate_candidates(entry=unrelated) == []
    # and switching the domain key off in the policy's parameters drops the domain match
    assert client_duplicate_candidates(entry=by_domain, params={"match_domain": False}) == []


@pytest.mark.django_db
def test_the_duplicate_check_scores_only_the_blocked_candidates_of_thousands_of_clients(django_assert_max_num_queries):
    # given 5,000 known clients
    ClientDirectoryEntry.objects.bulk_create(
        [
            ClientDirectoryEntry(
                source_key=f"hub:C{n}",
                source=DirectorySource.HUB,
                canonical_id=f"C{n}",
                name=f"Client {n:05d} Holdings",
                name_key=client_name_key(f"Client {n:05d} Holdings"),
                block_key=f"c{n:04d}"[:4],
                domain=f"client{n}.example",
            )
            for n in range(5000)
        ]
    )
    client_directory_entry_save(canonical_client={"id": "T1", "name": "Trey Research Inc"}, legal_entity=None)
    entry = client_directory_entry_save(canonical_client={"id": "T2", "name": "Trey Research, Inc."}, legal_entity=None)

    # when the new account is checked
    started = time.perf_counter()
    with django_assert_max_num_queries(3):
        candidates = client_duplicate_candidates(entry=entry)
    elapsed = time.perf_counter() - started

    # then the name variant is found, from a handful of indexed reads, well within a request's budget
    assert [c["canonical_id"] for c in candidates] == ["T1"]
    assert candidates[0]["score"] == 100.0
    assert elapsed < 0.5, f"the check took {elapsed:.3f} s"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_account_becomes_one_erp_party_and_one_psa_client_with_cross_references(firm, live_celery_worker_db):
    # given a CRM account
    account = account_create("Alpine Ski House Inc", Website="https://alpineskihouse.example")

    # when the CRM sends it to the hub
    account_event(firm, account)
    run = wait_for(lambda: _settled(account.external_id))

    # then the run completed through its steps, and the ERP and the PSA have the client, cross-referenced
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert set(Message.objects.filter(entity="client").values_list("flow", flat=True)) == {Flow.CLIENT_MASTER}
    assert list(run.steps.order_by("position").values_list("name", flat=True)) == [
        "check_duplicates",
        "erp_client",
        "psa_client",
    ]
    erp_id = CrossReference.objects.get(system=firm.erp, entity="client", canonical_id=account.external_id).external_id
    psa_id = CrossReference.objects.get(system=firm.psa, entity="client", canonical_id=account.external_id).external_id
    party = sandbox_record(SandboxSystem.ERP, ErpObject.CLIENT, erp_id)
    assert (party.data["name"], party.data["legal_entity"], party.data["external_ref"]) == (
        "Alpine Ski House Inc",
        "US01",
        account.external_id,
    )
    assert sandbox_record(SandboxSystem.PSA, PsaObject.CLIENT, psa_id).data["name"] == "Alpine Ski House Inc"

    # when the CRM sends the same account again
    account_event(firm, account)
    run = wait_for(lambda: _settled(account.external_id, erp_attempts=2))

    # then nothing is created twice
    assert len(erp_records(ErpObject.CLIENT, name="Alpine Ski House Inc")) == 1
    assert len(psa_records(PsaObject.CLIENT, name="Alpine Ski House Inc")) == 1
    assert not ExceptionItem.objects.filter(workflow_run=run).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_name_variant_is_held_as_a_suspect_then_linked_and_its_updates_go_to_the_linked_client(
    firm, live_celery_worker_db, make_role_user
):
    # given a client the hub already created from one account
    original = account_create("Contoso Pharmaceuticals Ltd")
    account_event(firm, original)
    assert wait_for(lambda: _settled(original.external_id)).status == RunStatus.COMPLETED
    erp_id = CrossReference.objects.get(system=firm.erp, entity="client", canonical_id=original.external_id).external_id

    # when a second account with a variant of the name arrives
    variant = account_create("CONTOSO Pharmaceuticals Limited")
    account_event(firm, variant)
    run = wait_for(lambda: _settled(variant.external_id))

    # then it is held as a duplicate suspect naming the candidate, its score and the matched key; nothing is created
    assert run.status == RunStatus.HELD
    item = ExceptionItem.objects.get(workflow_run=run, state=ExceptionState.OPEN)
    assert item.category == ExceptionCategory.DUPLICATE_SUSPECT
    assert item.external_id == variant.external_id
    (candidate,) = item.failed_rules
    assert candidate["candidate"] == f"hub:{original.external_id}"
    assert candidate["matched"] == ["name"]
    assert candidate["score"] == 100.0
    assert len(erp_records(ErpObject.CLIENT, name="CONTOSO Pharmaceuticals Limited")) == 0

    # when an auditor tries to link it, they are refused and nothing is recorded
    with pytest.raises(PermissionDenied):
        item_action_perform(
            item=item,
            action=DecisionAction.LINK_EXISTING,
            user=make_role_user("auditor"),
            reason="same company",
            candidate=candidate["candidate"],
        )
    assert not Decision.objects.filter(item=item).exists()

    # when an analyst links it to the existing client
    analyst = make_role_user("analyst")
    item_action_perform(
        item=item,
        action=DecisionAction.LINK_EXISTING,
        user=analyst,
        reason="same company",
        candidate=candidate["candidate"],
    )
    run = wait_for(lambda: _settled(variant.external_id))

    # then the run completes against the existing ERP party, creating no second one
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert run.context["erp_client_id"] == erp_id
    item.refresh_from_db()
    assert item.state == ExceptionState.RESOLVED
    assert Decision.objects.filter(item=item, action=DecisionAction.LINK_EXISTING, user=analyst).exists()
    assert len(erp_records(ErpObject.CLIENT, external_ref=variant.external_id)) == 0
    assert sandbox_record(SandboxSystem.ERP, ErpObject.CLIENT, erp_id).data["external_ref"] == original.external_id

    # when the linked account is updated in the CRM
    from sandbox.services import crm_record_save

    crm_record_save(object_type="Account", record=variant, data={"Name": "Contoso Pharma Group"}, notify=False)
    account_event(firm, variant)
    wait_for(lambda: _settled(variant.external_id, erp_attempts=2))

    # then the update goes to the linked ERP party
    assert sandbox_record(SandboxSystem.ERP, ErpObject.CLIENT, erp_id).data["name"] == "Contoso Pharma Group"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_create_new_creates_the_suspect_as_its_own_client_and_reject_creates_nothing(
    firm, live_celery_worker_db, make_role_user
):
    # given a known client and two accounts whose names are variants of it
    client_directory_entry_save(
        canonical_client={"id": "001KNOWN", "name": "Graphic Design Institute"}, legal_entity=firm.entity
    )
    new, rejected = account_create("Graphic Design Institute Inc"), account_create("Graphic Design Institute LLC")
    for account in (new, rejected):
        with pytest.raises(DuplicateSuspectHeld):
            client_master_ensure(
                canonical_client={"id": account.external_id, "name": account.data["Name"], "status": "active"},
                legal_entity=firm.entity,
            )
    analyst = make_role_user("analyst")

    # when the analyst creates the first as a new client
    item = ExceptionItem.objects.get(external_id=new.external_id, state=ExceptionState.OPEN)
    item_action_perform(item=item, action=DecisionAction.CREATE_NEW, user=analyst, reason="a different institute")
    run = wait_for(lambda: _settled(new.external_id))

    # then it is created in the ERP and the PSA, and is not held again
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert len(erp_records(ErpObject.CLIENT, external_ref=new.external_id)) == 1
    assert len(psa_records(PsaObject.CLIENT, external_reference=new.external_id)) == 1

    # when the analyst rejects the second
    other = ExceptionItem.objects.get(external_id=rejected.external_id, state=ExceptionState.OPEN)
    item_action_perform(item=other, action=DecisionAction.REJECT, user=analyst, reason="test account")

    # then its run is rejected, nothing is created, and a flow asking for it is told so
    assert WorkflowRun.objects.get(pk=other.workflow_run_id).status == RunStatus.REJECTED
    assert erp_records(ErpObject.CLIENT, external_ref=rejected.external_id) == []
    assert Decision.objects.filter(item=other, action=DecisionAction.REJECT, user=analyst).exists()
    with pytest.raises(ClientMasterError, match="rejected"):
        client_master_ensure(
            canonical_client={"id": rejected.external_id, "name": "Graphic Design Institute LLC"},
            legal_entity=firm.entity,
        )
