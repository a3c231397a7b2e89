"""The download path remembers its reads for at most a second per process
(`licensing.read_cache`): a change made elsewhere takes effect within a second, one made in the
same process on the very next request, and nothing time-bound is ever answered from memory."""

from datetime import timedelta

import psycopg
import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from licensing import access, read_cache
from licensing.keys import signing_key_ensure
from licensing.models import DownloadToken, GatePolicy
from licensing.tokens import token_create, token_touch
from release.models import Phase
from tests.factories import make_release, make_user
from tests.licensing.factories import make_license

URL = "/api/v1/models/acme/cached/versions/v1/files/weights/part-0.bin"


@pytest.fixture
def clock(monkeypatch):
    """read_cache's clock, standing still until a test moves it."""
    now = [1000.0]
    monkeypatch.setattr(read_cache, "_clock", lambda: now[0])
    read_cache.forget()
    yield now
    read_cache.forget()


@pytest.fixture
def holder(db):
    admin = make_user("root", is_staff=True, is_superuser=True)
    version = make_release(org="acme", name="cached", artifacts={"weights": Phase.GATED})
    signing_key_ensure(purpose="grants")
    access.gate_policy_set(actor=admin, model=version.model, license=make_license(actor=admin))
    user = make_user("holder")
    access.access_grant_direct(model=version.model, user=user, reviewer=admin)
    _, clear = token_create(user=user, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    return client, user, version


def elsewhere(sql: str, *params: object) -> None:
    """A write by another process: its own connection, not this process's execute wrapper."""
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname=connection.settings_dict["NAME"],
        autocommit=True,
    ) as other:
        other.execute(sql, params)


def get(client: APIClient) -> int:
    return client.get(URL, HTTP_PREFER="no-redirect").status_code


@pytest.mark.django_db(transaction=True)
def test_a_grant_revoked_by_another_process_stops_downloads_within_a_second(holder, clock):
    client, user, _ = holder
    assert get(client) == 200

    elsewhere("UPDATE licensing_grant SET revoked_at = now() WHERE user_id = %s", user.pk)

    assert get(client) == 200  # remembered: this process has not seen the write
    clock[0] += read_cache.MAX_AGE
    assert get(client) == 403


@pytest.mark.django_db(transaction=True)
def test_a_token_revoked_by_another_process_stops_within_a_second(holder, clock):
    client, user, _ = holder
    assert get(client) == 200

    elsewhere("UPDATE licensing_downloadtoken SET revoked_at = now() WHERE user_id = %s", user.pk)
    clock[0] += read_cache.MAX_AGE

    assert client.get(URL).json()["error"]["code"] == "token_revoked"


@pytest.mark.django_db(transaction=True)
def test_a_withdrawal_by_another_process_hides_a_sealed_file_within_a_second(holder, clock):
    client, _, version = holder
    assert get(client) == 200

    elsewhere("UPDATE release_artifact SET phase = 'withdrawn' WHERE version_id = %s", version.pk)
    clock[0] += read_cache.MAX_AGE

    assert get(client) == 404  # kept longer than a second, but not past a phase change


def test_a_write_in_this_process_is_seen_on_the_next_request(holder, clock):
    client, _, version = holder
    assert get(client) == 200

    GatePolicy.objects.filter(model=version.model).update(
        license=make_license(
            actor=make_user("editor", is_staff=True), version="2.0", text="New terms.\n"
        )
    )

    assert get(client) == 403  # the clock stood still: the update forgot what was remembered


def test_an_expired_grant_is_never_answered_from_memory(holder, clock):
    client, user, _ = holder
    grant = user.grants.get()
    grant.expires_at = timezone.now() + timedelta(hours=1)
    grant.save(update_fields=["expires_at"])
    assert get(client) == 200

    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=False):
        assert get(client) == 403


def test_recording_a_tokens_use_forgets_nothing(holder, clock):
    client, user, _ = holder
    assert get(client) == 200
    token = DownloadToken.objects.get(user=user)
    remembered = read_cache.remembered(("probe",), lambda: "kept")

    token.last_used_at = None
    token_touch(token)

    assert read_cache.remembered(("probe",), lambda: "reloaded") == remembered == "kept"
