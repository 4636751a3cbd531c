"""Throttling: budgets live in the shared cache, so a budget spent by one process is spent for all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from django.conf import settings as django_settings
from django.test import Client

from integrationhub.throttling import Rate, budget_spend, parse_rate

SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, os, django
    django.setup()
    from django.test import Client
    client = Client(HTTP_AUTHORIZATION="Api-Key " + os.environ["PROBE_KEY"])
    calls = int(os.environ["PROBE_CALLS"])
    print(json.dumps([client.get("/api/v1/legal-entities/").status_code for _ in range(calls)]))
    """
)


def database_url_of_the_test_database() -> str:
    database = django_settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    user = database.get("USER") or ""
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{database['PORT']}" if database.get("PORT") else ""
    return f"postgres://{auth}{database.get('HOST') or '127.0.0.1'}{port}/{database['NAME']}"


def test_parse_rate_understands_the_usual_spellings():
    assert parse_rate("600/min") == Rate(600, 60)
    assert parse_rate("10/5s") == Rate(10, 5)
    assert parse_rate("1000/hour") == Rate(1000, 3600)
    with pytest.raises(ValueError, match="600/min"):
        parse_rate("lots")


def test_budget_allows_the_rate_then_answers_the_wait_until_the_next_window():
    ident = uuid.uuid4().hex
    now = 60 * 16_666 + 20.0  # 20 s into a 60 s window
    assert [budget_spend(scope="t", ident=ident, rate="3/min", now=now) for _ in range(3)] == [None, None, None]
    assert budget_spend(scope="t", ident=ident, rate="3/min", now=now) == pytest.approx(40.0)
    assert budget_spend(scope="t", ident=ident, rate="3/min", now=now + 40) is None  # the next window


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_key_budget_spent_in_another_process_is_spent_here(make_api_key, settings):
    # given a budget of 4 calls an hour (an hour so that a window boundary does not fall inside the test)
    settings.HUB_API_RATE = "4/hour"
    _, key = make_api_key("auditor", scopes=["config:read"])

    # when another process, sharing only the cache and the database, spends the whole budget
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
        "DATABASE_URL": database_url_of_the_test_database(),
        "HUB_API_RATE": "4/hour",
        "PROBE_KEY": key,
        "PROBE_CALLS": "4",
    }
    result = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=django_settings.BASE_DIR,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [200, 200, 200, 200]

    # then this process's next call with the key is refused: 429 problem+json with Retry-After
    response = Client(HTTP_AUTHORIZATION=f"Api-Key {key}").get("/api/v1/legal-entities/")
    assert response.status_code == 429
    assert response["Content-Type"].startswith("application/problem+json")
    assert 0 < int(response["Retry-After"]) <= 3600
    assert response.json()["status"] == 429

    # and another key still has its own budget
    _, other = make_api_key("auditor", scopes=["config:read"])
    assert Client(HTTP_AUTHORIZATION=f"Api-Key {other}").get("/api/v1/legal-entities/").status_code == 200


@pytest.mark.django_db
def test_refused_keys_are_throttled_per_key_prefix_and_address_but_a_valid_key_never_is(make_api_key, settings):
    # given 3 refused keys allowed per key prefix, address and hour
    settings.HUB_API_AUTH_FAILURE_RATE = "3/hour"
    api_key, key = make_api_key("auditor", scopes=["config:read"])
    address = f"2001:db8:{uuid.uuid4().hex[:4]}::{uuid.uuid4().hex[:4]}"
    guesser = Client(REMOTE_ADDR=address)
    wrong = f"Api-Key {api_key.prefix}.guess-{uuid.uuid4().hex}"
    statuses = [guesser.get("/api/v1/legal-entities/", HTTP_AUTHORIZATION=wrong).status_code for _ in range(3)]

    # when the address guesses that key once more, guesses another key, and presents the valid key
    again = guesser.get("/api/v1/legal-entities/", HTTP_AUTHORIZATION=wrong)
    other = guesser.get("/api/v1/legal-entities/", HTTP_AUTHORIZATION=f"Api-Key {uuid.uuid4().hex[:8]}.guess")
    valid = guesser.get("/api/v1/legal-entities/", HTTP_AUTHORIZATION=f"Api-Key {key}")

    # then only the guesses at that key from that address must wait; the other guess is a plain 401, the valid
    # key is served, and another address guessing the same key is not held up by the first
    assert statuses == [401, 401, 401]
    assert again.status_code == 429 and int(again["Retry-After"]) > 0
    assert api_key.prefix in again.json()["detail"]
    assert other.status_code == 401
    assert valid.status_code == 200
    assert Client(REMOTE_ADDR="203.0.113.7").get("/api/v1/legal-entities/", HTTP_AUTHORIZATION=wrong).status_code == 401
