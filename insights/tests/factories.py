"""factory_boy factories of the rows the KPIs read: messages, deliveries and attempts, runs and steps, items."""

from __future__ import annotations

import factory
from django.utils import timezone

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from insights.choices import BatchKind
from insights.models import BatchProgress
from sync.choices import AttemptOutcome, MessageStatus
from sync.models import Delivery, DeliveryAttempt, Message
from workflows.choices import RunStatus, StepStatus
from workflows.models import WorkflowRun, WorkflowStep


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    system = factory.SubFactory(ConnectedSystemFactory)
    entity = "time_entry"
    event_type = "time_entry.approved"
    idempotency_key = factory.Sequence(lambda n: f"kpi-test-{n}")
    correlation_id = factory.Sequence(lambda n: f"corr-{n}")
    status = MessageStatus.DELIVERED
    flow = Flow.TIME_EXPENSE_TO_ERP
    received_at = factory.LazyFunction(timezone.now)


class DeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Delivery

    message = factory.SubFactory(MessageFactory)
    target_system = factory.SubFactory(ConnectedSystemFactory)
    idempotency_key = factory.Sequence(lambda n: f"kpi-delivery-{n}")


class DeliveryAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DeliveryAttempt

    delivery = factory.SubFactory(DeliveryFactory)
    # The system called: a delivery's target; set it (with delivery=None) for a workflow step's call.
    system = factory.LazyAttribute(lambda attempt: attempt.delivery.target_system if attempt.delivery else None)
    number = 1
    outcome = AttemptOutcome.DELIVERED
    created_at = factory.LazyFunction(timezone.now)


class WorkflowRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowRun

    flow = Flow.OPPORTUNITY_TO_PROJECT
    business_key = factory.Sequence(lambda n: f"crm:opportunity:{n}")
    status = RunStatus.COMPLETED
    triggered_at = factory.LazyFunction(timezone.now)
    started_at = factory.LazyAttribute(lambda run: run.triggered_at)


class WorkflowStepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowStep

    run = factory.SubFactory(WorkflowRunFactory)
    name = "release_staffing"
    position = 6
    status = StepStatus.DONE


class ExceptionItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ExceptionItem

    category = ExceptionCategory.VALIDATION
    state = ExceptionState.OPEN
    reason = "Rate above the rate card."
    flow = Flow.TIME_EXPENSE_TO_ERP
    created_at = factory.LazyFunction(timezone.now)


class BatchProgressFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BatchProgress

    kind = BatchKind.FILE_DROP
    system = factory.SubFactory(ConnectedSystemFactory)
    entity = "client"
    label = "clients.csv"
