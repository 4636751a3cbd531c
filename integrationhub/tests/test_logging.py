import json
import logging

from integrationhub.logging import CORRELATION_HEADER, CorrelationIdFilter, JsonFormatter, bind_correlation_id


def test_json_formatter_writes_one_object_with_correlation_id_and_extra_fields():
    # given a bound correlation id
    bind_correlation_id("abc123")
    record = logging.LogRecord("hub.test", logging.INFO, __file__, 1, "delivered %s", ("x",), None)
    record.system = "crm"
    CorrelationIdFilter().filter(record)
    # when formatted
    line = JsonFormatter().format(record)
    bind_correlation_id(None)
    # then it is a single JSON object with the fields a log search needs
    entry = json.loads(line)
    assert entry["message"] == "delivered x"
    assert entry["level"] == "INFO"
    assert entry["correlation_id"] == "abc123"
    assert entry["system"] == "crm"
    assert "\n" not in line


def test_requests_get_a_correlation_id_and_keep_a_supplied_one(client):
    generated = client.get("/healthz")
    supplied = client.get("/healthz", headers={CORRELATION_HEADER: "trace-42"})
    assert len(generated[CORRELATION_HEADER]) == 32
    assert supplied[CORRELATION_HEADER] == "trace-42"


def test_a_w3c_traceparent_supplies_the_correlation_id_when_no_header_does(client):
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = client.get("/healthz", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    malformed = client.get("/healthz", headers={"traceparent": "not-a-trace"})
    assert response[CORRELATION_HEADER] == trace
    assert len(malformed[CORRELATION_HEADER]) == 32 and malformed[CORRELATION_HEADER] != trace
