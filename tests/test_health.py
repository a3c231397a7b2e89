"""Liveness and readiness."""

import pytest


def test_healthz_answers_without_touching_anything(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_redis_and_object_store(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "object_store": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_when_the_object_store_is_down(client, settings):
    from release.storage import s3_client

    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"
    s3_client.cache_clear()
    try:
        response = client.get("/readyz")
    finally:
        s3_client.cache_clear()

    assert response.status_code == 503
    assert response.json()["checks"]["object_store"] == "unavailable"
    assert "127.0.0.1" not in response.content.decode()
