"""Downloads: the one authorisation question, for every role and phase, then what a permitted
download gets (a presigned URL that serves the bytes, with Range), throttles, and the log."""

import hashlib
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from config.redis_client import redis_client
from licensing import access
from licensing.keys import signing_key_ensure
from licensing.models import GatePolicy, PartnerOrganisation
from licensing.tokens import token_create, token_hash, token_revoke
from release import distribution
from release.distribution import BUFFER_KEY, LEASE_UNITS, downloads_flush
from release.models import DownloadDaily, DownloadEvent, Phase
from release.sample_weights import sample_tokenizer_files
from tests.factories import make_release, make_user
from tests.licensing.factories import make_license
from tests.staging import ingest_now

pytestmark = pytest.mark.django_db

PHASES = {"p": Phase.PROPRIETARY, "g": Phase.GATED, "o": Phase.OPEN, "w": Phase.WITHDRAWN}

# Expected status of GET .../files/{artifact}/part-0.bin for each role and phase, written down
# so that a change in the rules has to change this table.
MATRIX = {
    #                   proprietary gated open withdrawn
    "anonymous": (404, 401, 200, 404),
    "developer": (404, 403, 200, 404),
    "grant_holder": (404, 200, 200, 404),
    "revoked_grant": (404, 403, 200, 404),
    "expired_token": (401, 401, 401, 401),
    "revoked_token": (401, 401, 401, 401),
    "others_token": (404, 200, 200, 404),  # acts as the token's owner (a grant holder)
    "scoped_elsewhere": (404, 403, 403, 404),  # what it may not see stays hidden
    "partner": (200, 403, 200, 404),
    "staff": (200, 200, 200, 403),
    "admin": (200, 200, 200, 403),
}


@pytest.fixture
def world(db):
    """One model whose version has an artifact in each phase, a license, and the people."""
    admin = make_user("root", is_staff=True, is_superuser=True)
    version = make_release(org="acme", name="llm", artifacts={f"{k}": v for k, v in PHASES.items()})
    model = version.model
    signing_key_ensure(purpose="grants")
    access.gate_policy_set(
        actor=admin, model=model, license=make_license(actor=admin), approval_mode="manual"
    )
    people = {
        name: make_user(name)
        for name in ("developer", "grant_holder", "revoked_holder", "partner", "token_owner")
    }
    people["staff"] = make_user("staffer", is_staff=True)
    people["admin"] = admin
    for holder in ("grant_holder", "revoked_holder", "token_owner"):
        access.access_grant_direct(model=model, user=people[holder], reviewer=admin)
    revoked = people["revoked_holder"].grants.get()
    access.grant_revoke(grant=revoked, actor=admin, reason="broke the license")
    agency = PartnerOrganisation.objects.create(name="Agency")
    agency.members.add(people["partner"])
    GatePolicy.objects.get(model=model).partners.add(agency)
    return version, people


def client_as(role, people) -> APIClient:
    client = APIClient()
    if role == "anonymous":
        return client
    if role in ("developer", "grant_holder", "partner", "staff", "admin"):
        client.force_authenticate(people[role])
    elif role == "revoked_grant":
        client.force_authenticate(people["revoked_holder"])
    elif role == "others_token":
        _, clear = token_create(user=people["token_owner"], name="ci")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    elif role == "expired_token":
        token, clear = token_create(
            user=people["grant_holder"],
            name="old",
            expires_at=datetime.now(UTC) + timedelta(seconds=1),
        )
        type(token).objects.filter(pk=token.pk).update(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    elif role == "revoked_token":
        token, clear = token_create(user=people["grant_holder"], name="gone")
        token_revoke(token=token, user=people["grant_holder"])
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    elif role == "scoped_elsewhere":
        _, clear = token_create(user=people["grant_holder"], name="other", models=["acme/other"])
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    return client


@pytest.mark.parametrize("role", sorted(MATRIX))
def test_download_authorisation_matrix(world, role):
    version, people = world
    client = client_as(role, people)

    statuses = tuple(
        client.get(
            f"/api/v1/models/acme/llm/versions/v1/files/{key}/part-0.bin", HTTP_PREFER="no-redirect"
        ).status_code
        for key in PHASES
    )

    assert statuses == MATRIX[role]


def test_refusals_say_what_to_do_next(world):
    version, people = world
    url = "/api/v1/models/acme/llm/versions/v1/files/g/part-0.bin"

    anonymous = client_as("anonymous", people).get(url)
    developer = client_as("developer", people).get(url)
    revoked = client_as("revoked_grant", people).get(url)
    expired = client_as("expired_token", people).get(url)
    scoped = client_as("scoped_elsewhere", people).get(url)

    assert "request access at http" in anonymous.json()["error"]["message"]
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert "request access at" in developer.json()["error"]["message"]
    assert "was revoked: broke the license" in revoked.json()["error"]["message"]
    assert expired.json()["error"]["code"] == "token_expired"
    assert "create a new one" in expired.json()["error"]["message"]
    assert scoped.json()["error"]["code"] == "token_scope"


def test_pending_and_rejected_requests_are_named(world):
    version, people = world
    model, admin = version.model, people["admin"]
    license = GatePolicy.objects.get(model=model).license
    assert license is not None
    pending = access.access_request_submit(
        user=people["developer"], model=model, license=license, answers={}
    )
    url = "/api/v1/models/acme/llm/versions/v1/files/g/part-0.bin"
    waiting = client_as("developer", people).get(url).json()["error"]["message"]
    access.access_request_reject(
        request=pending, reviewer=admin, reason="no affiliation given", may_reapply=True
    )

    rejected = client_as("developer", people).get(url).json()["error"]["message"]

    assert "pending review" in waiting
    assert "rejected: no affiliation given" in rejected
    assert "you may apply again" in rejected


def test_new_license_version_must_be_accepted_again(world):
    version, people = world
    admin = people["admin"]
    v2 = make_license(actor=admin, version="2.0", text="New terms.\n")
    access.gate_policy_set(actor=admin, model=version.model, license=v2)

    response = client_as("grant_holder", people).get(
        "/api/v1/models/acme/llm/versions/v1/files/g/part-0.bin"
    )

    assert response.status_code == 403
    assert "accept the current license" in response.json()["error"]["message"]


def test_revoking_a_grant_stops_downloads_on_the_next_request(world):
    version, people = world
    client = client_as("grant_holder", people)
    url = "/api/v1/models/acme/llm/versions/v1/files/g/part-0.bin"
    assert client.get(url, HTTP_PREFER="no-redirect").status_code == 200

    access.grant_revoke(
        grant=people["grant_holder"].grants.get(), actor=people["admin"], reason="license breach"
    )

    assert client.get(url, HTTP_PREFER="no-redirect").status_code == 403


def test_revoking_a_token_stops_it_on_the_next_request(world):
    version, people = world
    token, clear = token_create(user=people["grant_holder"], name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    url = "/api/v1/models/acme/llm/versions/v1/files/o/part-0.bin"
    assert client.get(url, HTTP_PREFER="no-redirect").status_code == 200

    token_revoke(token=token, user=people["grant_holder"])

    assert client.get(url).json()["error"]["code"] == "token_revoked"


def test_tokens_are_read_only(world):
    _, people = world
    _, clear = token_create(user=people["developer"], name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")

    response = client.post("/api/v1/me/tokens/", {"name": "sneaky"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "token_read_only"


def test_a_permitted_download_redirects_to_bytes_that_support_range(db):
    files = sample_tokenizer_files()
    version, _ = ingest_now(org="acme", name="dl", artifacts={"tokenizer": files})
    staff = make_user("staffer", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    body = files["tokenizer.json"]

    redirect = client.get("/api/v1/models/acme/dl/versions/v1/files/tokenizer.json")
    described = client.get(
        "/api/v1/models/acme/dl/versions/v1/files/tokenizer.json", HTTP_PREFER="no-redirect"
    ).json()
    whole = urllib.request.urlopen(redirect["Location"]).read()
    ranged = urllib.request.urlopen(
        urllib.request.Request(redirect["Location"], headers={"Range": "bytes=10-19"})
    )

    assert redirect.status_code == 302
    assert redirect["X-Linked-Size"] == str(len(body))
    assert described["sha256"] == hashlib.sha256(body).hexdigest()
    assert described["size"] == len(body)
    assert whole == body
    assert ranged.status == 206
    assert ranged.read() == body[10:20]
    tampered = redirect["Location"].replace("Signature=", "Signature=0")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(tampered)


def test_unknown_things_are_404(world):
    _, people = world
    client = client_as("staff", people)

    assert client.get("/api/v1/models/acme/nope/versions/v1/files/o/part-0.bin").status_code == 404
    assert client.get("/api/v1/models/acme/llm/versions/v9/files/o/part-0.bin").status_code == 404
    missing = client.get("/api/v1/models/acme/llm/versions/v1/files/o/missing.bin")
    assert missing.json()["error"]["code"] == "file_not_found"


@pytest.fixture
def clean_buffer():
    redis_client().delete(BUFFER_KEY)
    yield
    redis_client().delete(BUFFER_KEY)


def test_gets_are_logged_in_batches_and_heads_are_not(world, clean_buffer):
    _, people = world
    client = client_as("grant_holder", people)
    url = "/api/v1/models/acme/llm/versions/v1/files/o/part-0.bin"

    client.head(url)
    client.get(url)
    client.get(url, HTTP_PREFER="no-redirect")
    assert not DownloadEvent.objects.exists()  # nothing written on the request path

    flushed = downloads_flush()

    assert flushed == 2
    assert DownloadEvent.objects.count() == 2
    assert DownloadDaily.objects.get().count == 2
    assert downloads_flush() == 0


def token_client(user) -> tuple[APIClient, str]:
    """A client sending a new token of `user`'s, and the token."""
    _, clear = token_create(user=user, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    return client, clear


def test_per_token_rate_limit_answers_429_with_retry_after(world, settings):
    settings.DOWNLOAD_RATE_PER_MINUTE = 2
    _, people = world
    client, _ = token_client(people["grant_holder"])
    url = "/api/v1/models/acme/llm/versions/v1/files/o/part-0.bin"

    answers = [client.get(url, HTTP_PREFER="no-redirect") for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2]["Retry-After"]) >= 1
    assert answers[2].json()["error"]["code"] == "rate_limited"


def test_per_grant_daily_quota(world, settings):
    settings.DOWNLOAD_DAILY_QUOTA = 1
    _, people = world
    client = client_as("grant_holder", people)
    url = "/api/v1/models/acme/llm/versions/v1/files/g/part-0.bin"

    first, second = client.get(url), client.get(url)

    assert first.status_code == 302
    assert second.status_code == 429
    assert "daily quota" in second.json()["error"]["message"]


def _token_counter(clear: str) -> int:
    """The token's request count this minute, as Redis holds it."""
    keys = redis_client().keys(f"ratelimit:token:{token_hash(clear)[:16]}:*")
    return sum(int(redis_client().get(key) or 0) for key in keys)


def test_heads_are_counted_in_advance_a_lease_at_a_time(world, settings):
    settings.DOWNLOAD_RATE_PER_MINUTE = 10_000
    _, people = world
    client, clear = token_client(people["grant_holder"])
    url = "/api/v1/models/acme/llm/versions/v1/files/g/part-0.bin"

    assert client.head(url).status_code == 302
    assert _token_counter(clear) == LEASE_UNITS  # drawn before use: none goes uncounted
    for _ in range(LEASE_UNITS - 1):
        assert client.head(url).status_code == 302
    assert _token_counter(clear) == LEASE_UNITS  # used from the units held: no round trip
    assert client.head(url).status_code == 302
    assert _token_counter(clear) == 2 * LEASE_UNITS


def test_processes_holding_units_never_let_more_than_the_limit_through(
    world, settings, monkeypatch
):
    """Two processes (each with its own units held) share one token's limit: together they let
    exactly the limit through or a few fewer, never more; near the limit units go one by one."""
    settings.DOWNLOAD_RATE_PER_MINUTE = 100
    _, people = world
    client, clear = token_client(people["grant_holder"])
    url = "/api/v1/models/acme/llm/versions/v1/files/g/part-0.bin"
    processes: list[dict[str, int]] = [{}, {}]

    answers = []
    for turn in range(160):
        monkeypatch.setattr(distribution, "_leases", processes[turn % 2])
        answers.append(client.head(url).status_code)

    allowed = answers.count(302)
    assert set(answers) == {302, 429}
    assert _token_counter(clear) == 100  # every unit drawn, none past the limit
    unused = sum(units for held in processes for key, units in held.items() if "ratelimit" in key)
    assert allowed == 100 - unused
    assert allowed >= 90  # refused early by at most the few units the other process holds


def test_download_counts_per_version_and_day_in_the_api(world, clean_buffer):
    _, people = world
    client = client_as("grant_holder", people)
    for _ in range(3):
        client.get("/api/v1/models/acme/llm/versions/v1/files/o/part-0.bin")
    downloads_flush()

    counts = APIClient().get("/api/v1/models/acme/llm/downloads/").json()["results"]

    assert counts == [{"version": "v1", "day": datetime.now(UTC).date().isoformat(), "count": 3}]
