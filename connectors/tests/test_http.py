"""The HTTP layer: error classification, correlation ids, safe logging, keep-alive and the OAuth2 token cache."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from django.core.cache import cache

from connectors.http import (
    OAuth2ClientCredentialsAuth,
    RetryableConnectorError,
    TerminalConnectorError,
    classify_error,
    client_for,
)
from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.errors import HubError
from integrationhub.logging import bind_correlation_id


def _response(status: int, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "https://x.test/v1/items?token=s"))


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_are_retryable(status):
    # given / when a failed response is classified
    error = classify_error(_response(status, {"Retry-After": "7"}), system_slug="crm")
    # then it is retryable, keeps the status and the Retry-After, and is a HubError
    assert isinstance(error, RetryableConnectorError)
    assert isinstance(error, HubError)
    assert error.status_code == status
    assert error.retry_after == 7.0
    assert "token=s" not in error.detail


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_are_terminal(status):
    error = classify_error(_response(status), system_slug="crm")
    assert isinstance(error, TerminalConnectorError)
    assert not error.retryable


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("t"),
        httpx.ReadTimeout("t"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("eof"),
    ],
)
def test_timeouts_and_connection_errors_are_retryable(exc):
    assert isinstance(classify_error(exc), RetryableConnectorError)


@pytest.mark.django_db
def test_connection_refused_is_retryable_through_the_client():
    # given a system pointing at a closed port
    system = ConnectedSystemFactory(base_url="http://127.0.0.1:9")
    # when a call is made, then the transport failure is raised as retryable
    with pytest.raises(RetryableConnectorError):
        client_for(system).request("GET", "/health")


@pytest.mark.django_db
def test_every_call_carries_the_correlation_id_and_logs_one_line_without_secrets(local_server, caplog):
    # given a system with an API key and a bound correlation id
    local_server.route("GET", "/v1/items", 200, {"items": []})
    system = ConnectedSystemFactory(slug="psa-main", base_url=local_server.url)
    bind_correlation_id("corr-abc-123")
    caplog.set_level(logging.INFO, logger="connectors.http")
    try:
        # when a call is made with a secret header and a secret query parameter
        client_for(system).request(
            "GET", "/v1/items", headers={"X-API-Key": "sekrit-key-999"}, params={"api_key": "sekrit-query-777"}
        )
    finally:
        bind_correlation_id(None)
    # then the server saw the correlation id
    assert local_server.requests[-1].headers["X-Correlation-ID"] == "corr-abc-123"
    # and exactly one structured line was logged, with no secret in it
    lines = [r for r in caplog.records if r.name == "connectors.http"]
    assert len(lines) == 1
    record = lines[0]
    assert (record.system, record.method, record.path, record.status) == ("psa-main", "GET", "/v1/items", 200)
    assert record.duration_ms >= 0
    assert record.query_keys == ["api_key"]
    dumped = json.dumps(vars(record), default=str)
    assert "sekrit" not in dumped


@pytest.mark.django_db
def test_the_client_is_shared_per_system_and_keeps_connections_alive(local_server):
    # given a system
    local_server.route("GET", "/health", 200, {"ok": True})
    system = ConnectedSystemFactory(base_url=local_server.url)
    # when two calls are made
    first = client_for(system)
    first.request("GET", "/health")
    first.request("GET", "/health")
    # then the same pooled client serves the system, and both calls used one connection
    assert client_for(system) is first
    assert first._client._transport._pool.connections.__len__() == 1
    # and a change of base URL builds a new client
    system.base_url = local_server.url + "/"
    system.settings = {"auth_mode": "api_key", "timeout_seconds": 3}
    assert client_for(system) is not first


@pytest.mark.django_db
def test_oauth2_token_is_cached_and_reused_until_expiry(local_server):
    # given a token endpoint and a protected API
    cache.clear()
    tokens = iter(["tok-1", "tok-2"])
    local_server.route_fn(
        "POST", "/oauth/token", lambda req: (200, {"access_token": next(tokens), "expires_in": 3600}, {})
    )
    local_server.route("GET", "/v1/me", 200, {"me": 1})
    system = ConnectedSystemFactory(slug="collab", base_url=local_server.url)
    auth = OAuth2ClientCredentialsAuth(
        token_url=local_server.url + "/oauth/token", client_id="cid", client_secret="csecret", cache_namespace="collab"
    )
    client = client_for(system)
    # when two calls are made
    client.request("GET", "/v1/me", auth=auth)
    client.request("GET", "/v1/me", auth=auth)
    # then the token was fetched once and sent on both calls
    token_calls = [r for r in local_server.requests if r.path == "/oauth/token"]
    assert len(token_calls) == 1
    assert b"grant_type=client_credentials" in token_calls[0].body
    api_calls = [r for r in local_server.requests if r.path == "/v1/me"]
    assert [r.headers["Authorization"] for r in api_calls] == ["Bearer tok-1", "Bearer tok-1"]
    # and the cache key does not contain the secret
    assert "csecret" not in auth.cache_key
    assert cache.get(auth.cache_key) == "tok-1"


@pytest.mark.django_db
def test_oauth2_token_with_a_short_life_is_refreshed_before_expiry(local_server):
    # given a provider whose tokens live less than the refresh margin
    cache.clear()
    tokens = iter(["short-1", "short-2"])
    local_server.route_fn("POST", "/token", lambda req: (200, {"access_token": next(tokens), "expires_in": 30}, {}))
    local_server.route("GET", "/v1/me", 200, {})
    system = ConnectedSystemFactory(slug="short", base_url=local_server.url)
    auth = OAuth2ClientCredentialsAuth(token_url=local_server.url + "/token", client_id="a", client_secret="b")
    client = client_for(system)
    client.request("GET", "/v1/me", auth=auth)
    # when the cached entry has expired (ttl = max(1, 30 - 60) seconds)
    cache.delete(auth.cache_key)
    client.request("GET", "/v1/me", auth=auth)
    # then a new token was fetched
    assert [r.headers["Authorization"] for r in local_server.requests if r.path == "/v1/me"] == [
        "Bearer short-1",
        "Bearer short-2",
    ]


@pytest.mark.django_db
def test_oauth2_refetches_the_token_once_on_401(local_server):
    # given a cached token the API no longer accepts
    cache.clear()
    local_server.route_fn("POST", "/token", lambda req: (200, {"access_token": "fresh", "expires_in": 3600}, {}))
    local_server.route_fn(
        "GET", "/v1/me", lambda req: (200, {}, {}) if req.headers["Authorization"] == "Bearer fresh" else (401, {}, {})
    )
    system = ConnectedSystemFactory(slug="revoked", base_url=local_server.url)
    auth = OAuth2ClientCredentialsAuth(token_url=local_server.url + "/token", client_id="a", client_secret="b")
    cache.set(auth.cache_key, "revoked-token", 600)
    # when a call is made, then it succeeds with a new token
    response = client_for(system).request("GET", "/v1/me", auth=auth)
    assert response.status_code == 200
    assert cache.get(auth.cache_key) == "fresh"
