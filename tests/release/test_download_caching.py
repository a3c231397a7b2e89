"""The download path remembers its reads per process (`licensing.read_cache`): a change another
process announces takes effect within a second, one made in the same process on the very next
request, one made outside Weightgate within a minute, and nothing time-bound is ever answered
from memory."""

from datetime import timedelta

import psycopg
import pytest
import redis
import time_machine
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from config.redis_client import redis_client
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
    monkeypatch.setattr(read_cache, "_looked_at", float("-inf"))  # looks at its first use
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


def outside(sql: str, *params: object) -> None:
    """A write outside Weightgate (psql, say): its own connection, announcing nothing."""
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


def elsewhere(sql: str, *params: object) -> None:
    """A write by another Weightgate process: committed, then announced as its execute
    wrapper does (not this process's)."""
    outside(sql, *params)
    redis.Redis.from_url(settings.REDIS_URL).incr(read_cache.GENERATION_KEY)


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


@pytest.mark.django_db(transaction=True)
def test_without_an_announced_change_answers_are_kept_past_a_second(holder, clock):
    client, user, _ = holder
    assert get(client) == 200

    outside("UPDATE licensing_grant SET revoked_at = now() WHERE user_id = %s", user.pk)
    clock[0] += 30 * read_cache.MAX_AGE
    kept = get(client)
    clock[0] += read_cache.KEEP

    assert kept == 200  # no process announced it: nothing was reloaded
    assert get(client) == 403  # a write outside Weightgate is seen within KEEP


@pytest.mark.django_db(transaction=True)
def test_when_redis_cannot_tell_whether_anything_changed_answers_last_a_second(
    holder, clock, settings
):
    client, user, _ = holder
    assert get(client) == 200
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    redis_client.cache_clear()
    try:
        outside("UPDATE licensing_grant SET revoked_at = now() WHERE user_id = %s", user.pk)
        clock[0] += read_cache.MAX_AGE
        status = get(client)
    finally:
        redis_client.cache_clear()

    assert status == 403


@pytest.mark.django_db(transaction=True)
def test_a_committed_transaction_announces_its_change_once(holder, clock):
    _, _, version = holder
    shared = redis.Redis.from_url(settings.REDIS_URL)
    before = int(shared.get(read_cache.GENERATION_KEY) or 0)

    with transaction.atomic():
        GatePolicy.objects.filter(model=version.model).update(approval_mode="manual")
        GatePolicy.objects.filter(model=version.model).update(approval_mode="auto")
        announced_early = int(shared.get(read_cache.GENERATION_KEY) or 0) - before
    with transaction.atomic():
        GatePolicy.objects.filter(model=version.model).update(approval_mode="manual")
        transaction.set_rollback(True)

    assert announced_early == 0  # not before the commit: others would reload the old rows
    assert int(shared.get(read_cache.GENERATION_KEY) or 0) - before == 1  # nothing rolled back


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
