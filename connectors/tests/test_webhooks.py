"""The hub's Standard Webhooks check is product code: the specification's example, tampering, and the sandbox
signing with the same module the inbound endpoint verifies with."""

from __future__ import annotations

import sandbox.webhooks
from connectors import webhooks
from connectors.webhooks import sign_standard_webhook, verify_standard_webhook, verify_standard_webhook_headers

# The example of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_product_module_signs_and_verifies_the_specification_example():
    # given the specification's secret, id, timestamp and body
    # when the product module signs and verifies them
    signature = sign_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    # then the signature is the specification's, and it verifies within the tolerance only
    assert signature == SPEC_SIGNATURE
    assert verify_standard_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, signature, SPEC_BODY, now=SPEC_TIMESTAMP + 10)
    assert not verify_standard_webhook(
        SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, signature, SPEC_BODY, now=SPEC_TIMESTAMP + 301
    )
    assert not verify_standard_webhook(
        SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, signature, '{"test": 1}', now=SPEC_TIMESTAMP
    )


def test_the_sandbox_signs_with_the_products_code_and_the_product_verifies_it():
    # given headers made by the sandbox for a body
    secret = sandbox.webhooks.generate_webhook_secret()
    headers = sandbox.webhooks.standard_webhook_headers(secret, "msg_1", 1_700_000_000, b'{"a": 1}')

    # when the product checks them
    verified = verify_standard_webhook_headers(secret, headers, b'{"a": 1}', now=1_700_000_000)

    # then they verify, and the sandbox's names are the product's own functions and constants
    assert verified
    for name in ("verify_standard_webhook", "sign_standard_webhook", "HEADER_SIGNATURE", "DEFAULT_TOLERANCE_SECONDS"):
        assert getattr(sandbox.webhooks, name) is getattr(webhooks, name), name
