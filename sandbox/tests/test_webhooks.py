"""Standard Webhooks signing and verification: the spec's test vector, tolerance and tampering."""

from sandbox.webhooks import (
    generate_webhook_secret,
    sign_standard_webhook,
    standard_webhook_headers,
    verify_standard_webhook,
    verify_standard_webhook_headers,
)

# The example of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specification_example():
    assert sign_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert sign_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.encode()) == SPEC_SIGNATURE


def test_verify_accepts_the_example_within_tolerance():
    assert verify_standard_webhook(
        SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE, SPEC_BODY, now=SPEC_TIMESTAMP + 10
    )


def test_verify_rejects_tampered_body_id_timestamp_or_secret():
    now = SPEC_TIMESTAMP
    assert not verify_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE, '{"test": 1}', now=now)
    assert not verify_standard_webhook(SPEC_SECRET, "msg_other", SPEC_TIMESTAMP, SPEC_SIGNATURE, SPEC_BODY, now=now)
    assert not verify_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_SIGNATURE, SPEC_BODY, now=now)
    other = generate_webhook_secret()
    assert not verify_standard_webhook(other, SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE, SPEC_BODY, now=now)


def test_verify_rejects_a_timestamp_outside_the_tolerance_either_way():
    assert not verify_standard_webhook(
        SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE, SPEC_BODY, now=SPEC_TIMESTAMP + 301
    )
    assert not verify_standard_webhook(
        SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE, SPEC_BODY, now=SPEC_TIMESTAMP - 301
    )
    assert verify_standard_webhook(
        SPEC_SECRET,
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_SIGNATURE,
        SPEC_BODY,
        now=SPEC_TIMESTAMP + 3600,
        tolerance_seconds=3600,
    )


def test_verify_accepts_any_of_several_signatures_and_ignores_other_versions():
    header = f"v1a,abc v1,bm90LXRoaXM= {SPEC_SIGNATURE}"
    assert verify_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, header, SPEC_BODY, now=SPEC_TIMESTAMP)
    assert not verify_standard_webhook(
        SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, "v2," + SPEC_SIGNATURE[3:], SPEC_BODY, now=SPEC_TIMESTAMP
    )


def test_verify_never_raises_on_malformed_input():
    assert not verify_standard_webhook(SPEC_SECRET, SPEC_ID, "not-a-number", SPEC_SIGNATURE, SPEC_BODY)
    assert not verify_standard_webhook(
        "whsec_%%%", SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE, SPEC_BODY, now=SPEC_TIMESTAMP
    )
    assert not verify_standard_webhook(SPEC_SECRET, "", SPEC_TIMESTAMP, SPEC_SIGNATURE, SPEC_BODY, now=SPEC_TIMESTAMP)
    assert not verify_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, "", SPEC_BODY, now=SPEC_TIMESTAMP)
    assert not verify_standard_webhook(
        SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE, b"\xff\xfe", now=SPEC_TIMESTAMP
    )


def test_headers_round_trip_through_the_header_verifier():
    secret = generate_webhook_secret()
    assert secret.startswith("whsec_")
    headers = standard_webhook_headers(secret, "msg_1", 1700000000, b'{"a":1}')
    upper = {key.title(): value for key, value in headers.items()}  # receivers see any header case
    assert verify_standard_webhook_headers(secret, upper, b'{"a":1}', now=1700000000)
    assert not verify_standard_webhook_headers(secret, upper, b'{"a":2}', now=1700000000)
