"""The client address behind per-address budgets: X-Forwarded-For only through HUB_TRUSTED_PROXIES; the anonymous
budget fires on endpoints that need a user; refused API keys are throttled per key prefix and address and never
hold up a valid key."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory

from integrationhub.throttling import client_ip

API = "/api/v1/legal-entities/"


def fresh_address() -> str:
    """An address no earlier run used: the budgets live in the shared cache, which outlives the test database."""
    return f"2001:db8:{uuid.uuid4().hex[:4]}::{uuid.uuid4().hex[:4]}"


def address_of(remote: str, forwarded: str | None = None) -> str | None:
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return client_ip(RequestFactory().get("/", REMOTE_ADDR=remote, **extra))


# --- client_ip ----------------------------------------------------------------------------------------------


def test_without_trusted_proxies_x_forwarded_for_is_ignored(settings):
    settings.HUB_TRUSTED_PROXIES = []
    assert address_of("192.0.2.10", "203.0.113.5") == "192.0.2.10"


def test_behind_a_trusted_proxy_the_client_is_the_first_untrusted_hop_from_the_right(settings):
    # given two proxies in 10.0.0.0/8, the outer one appending what it saw after what the client claimed
    settings.HUB_TRUSTED_PROXIES = ["10.0.0.0/8"]

    # when the inner proxy connects, forwarding a chain whose left end the client wrote itself
    address = address_of("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.7")

    # then the client is the hop the outer proxy saw, not the address it claimed
    assert address == "203.0.113.9"


def test_x_forwarded_for_from_an_untrusted_peer_or_with_garbage_proves_nothing(settings):
    settings.HUB_TRUSTED_PROXIES = ["10.0.0.1", "2001:db8:ffff::/48"]
    assert address_of("192.0.2.10", "203.0.113.5") == "192.0.2.10"  # not a proxy: its header is its own claim
    assert address_of("10.0.0.1", "203.0.113.5, not-an-address") == "10.0.0.1"  # the proxy is the last we trust
    assert address_of("10.0.0.1", "") == "10.0.0.1"
    assert address_of("2001:db8:ffff::1", "[2001:db8:1::5]:443") == "2001:db8:1::5"
    assert address_of("10.0.0.1", "198.51.100.4:5678") == "198.51.100.4"


def test_a_trusted_proxy_that_is_not_an_address_is_refused_with_the_setting_named(settings):
    settings.HUB_TRUSTED_PROXIES = ["proxy.internal"]
    with pytest.raises(ImproperlyConfigured, match="HUB_TRUSTED_PROXIES"):
        address_of("10.0.0.1", "203.0.113.5")


# --- the anonymous budget -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_unauthenticated_calls_to_an_endpoint_that_needs_a_user_are_throttled(settings):
    # given 50 calls an hour without credentials per address (an hour: no window boundary inside the test)
    settings.HUB_API_ANON_RATE = "50/hour"
    client = Client(REMOTE_ADDR=fresh_address())

    # when one address makes 200 unauthenticated calls to an endpoint that needs a user
    responses = [client.get(API) for _ in range(200)]

    # then the first 50 are refused as unauthenticated, the rest must wait, with Retry-After
    assert [response.status_code for response in responses] == [401] * 50 + [429] * 150
    assert responses[-1]["Content-Type"] == "application/problem+json"
    assert 0 < int(responses[-1]["Retry-After"]) <= 3600


@pytest.mark.django_db
def test_an_endpoint_open_to_anonymous_callers_spends_the_budget_once_per_call(settings):
    # given 3 anonymous calls an hour per address, and the schema, which anyone may read
    settings.HUB_API_ANON_RATE = "3/hour"
    client = Client(REMOTE_ADDR=fresh_address())

    # when one address reads it four times
    statuses = [client.get("/api/schema/").status_code for _ in range(4)]

    # then three are served (each spent one unit, not two) and the fourth waits
    assert statuses == [200, 200, 200, 429]


@pytest.mark.django_db
def test_a_client_cannot_escape_its_budget_by_inventing_x_forwarded_for(settings):
    # given a proxy the hub trusts, and 3 anonymous calls an hour per address
    settings.HUB_API_ANON_RATE = "3/hour"
    settings.HUB_TRUSTED_PROXIES = ["10.0.0.0/8"]
    direct = Client(REMOTE_ADDR=fresh_address())

    # when a client that connects directly claims a new address on every call
    direct_statuses = [direct.get(API, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(1, 6)]
    # and two clients come through the trusted proxy
    behind_proxy = Client(REMOTE_ADDR="10.1.2.3")
    first, second = fresh_address(), fresh_address()
    first_statuses = [behind_proxy.get(API, HTTP_X_FORWARDED_FOR=first).status_code for _ in range(4)]
    second_status = behind_proxy.get(API, HTTP_X_FORWARDED_FOR=second).status_code

    # then the direct client's claims are ignored, and the two proxied clients have a budget each
    assert direct_statuses == [401, 401, 401, 429, 429]
    assert first_statuses == [401, 401, 401, 429]
    assert second_status == 401


# --- refused API keys ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_many_refused_keys_from_an_address_never_block_a_valid_key(make_api_key):
    # given a valid key and the default budget of refused keys (30 a minute)
    _, key = make_api_key("auditor", scopes=["config:read"])
    client = Client(REMOTE_ADDR=fresh_address())

    # when the address presents 35 wrong keys, then the valid one
    refused = [
        client.get(API, HTTP_AUTHORIZATION=f"Api-Key {uuid.uuid4().hex[:8]}.guess").status_code for _ in range(35)
    ]
    valid = client.get(API, HTTP_AUTHORIZATION=f"Api-Key {key}")

    # then the wrong keys are refused and the valid key is served
    assert set(refused) == {401}
    assert valid.status_code == 200
