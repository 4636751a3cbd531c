"""The pipeline keeps each cleanly mapped inbound payload as a sample of its mapping, and never a failing one."""

from __future__ import annotations

import pytest

from mappings.choices import SampleOrigin
from mappings.models import MappingSample
from sync.choices import MessageStatus
from sync.models import Message
from sync.services import message_process
from sync.tests.conftest import client_record, make_flow, signed_post, target  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def _ingest(client, flow, record) -> Message:
    response = signed_post(client, flow, record)
    assert response.status_code == 202, response.content
    return Message.objects.get(pk=response.json()["message_id"])


def test_a_mapped_message_is_kept_as_a_sample_and_a_failing_one_is_not(client, make_flow, target, settings):  # noqa: F811
    settings.HUB_MAPPING_SAMPLES_KEPT = 3
    flow = make_flow(target.url)
    # when a good record and a record missing a required field go through the pipeline
    good = _ingest(client, flow, client_record("C-9", "Acme"))
    bad = _ingest(client, flow, {"Id": "C-10", "Name": "Broken"})
    assert message_process(message_id=good.pk) == MessageStatus.QUEUED
    message_process(message_id=bad.pk)
    # then only the good payload is kept, as it came, under its message, for the publish gate
    good.refresh_from_db()
    kept = MappingSample.objects.get(origin=SampleOrigin.CAPTURED)
    assert kept.lineage == good.mapping_set.lineage
    assert (kept.name, kept.message_id, kept.payload) == (f"message #{good.pk}", good.pk, good.raw_payload)
    assert not MappingSample.objects.filter(message_id=bad.pk).exists()
