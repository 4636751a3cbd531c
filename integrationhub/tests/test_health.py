import pytest


def test_healthz_answers_without_touching_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "parts": {"process": {"status": "ok"}}}


@pytest.mark.slow
def test_readyz_reports_database_broker_and_a_live_worker(db, client, live_celery_worker):
    # given a running worker
    # when readiness is asked for
    response = client.get("/readyz")
    # then every part is ok and the worker is named
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert {"database", "broker", "worker"} == set(body["parts"])
    assert all(part["status"] == "ok" for part in body["parts"].values())
    assert body["parts"]["worker"]["workers"]


def test_readyz_fails_with_503_and_names_the_part_when_the_broker_is_unreachable(db, client, settings):
    # given a broker address nothing listens on
    from integrationhub.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        # when readiness is asked for
        response = client.get("/readyz")
    finally:
        app.conf.broker_url = previous
    # then it is not ready, and the broker part says why
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "fail"
    assert body["parts"]["database"]["status"] == "ok"
    assert body["parts"]["broker"]["status"] == "fail"
    assert body["parts"]["broker"]["error"]
