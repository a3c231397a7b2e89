"""The staff pipeline API (ingests, unlocks) and the signature download, for every role."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from release import services
from release.models import IngestJob, Phase, Unlock
from release.sample_weights import sample_model_files, sample_tokenizer_files
from tests.factories import make_manager, make_release
from tests.staging import ingest_now, stage

pytestmark = pytest.mark.django_db


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


STAFF_ONLY = [
    ("post", "/api/v1/models/acme/tiny/ingests/"),
    ("get", "/api/v1/ingests/1/"),
    ("get", "/api/v1/unlocks/"),
    ("post", "/api/v1/unlocks/schedule"),
    ("get", "/api/v1/unlocks/1/"),
    ("post", "/api/v1/unlocks/1/approve"),
    ("post", "/api/v1/unlocks/1/reject"),
    ("post", "/api/v1/unlocks/1/cancel"),
    ("post", "/api/v1/unlocks/1/reschedule"),
]


@pytest.mark.parametrize(("method", "url"), STAFF_ONLY)
def test_pipeline_endpoints_refuse_anonymous_and_developers(method, url, outsider):
    anonymous = getattr(client_for(), method)(url, {}, format="json")
    developer = getattr(client_for(outsider), method)(url, {}, format="json")

    assert anonymous.status_code == 401  # not signed in: say how to authenticate
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert developer.status_code == 403
    assert developer.json()["error"]["code"] == "permission_denied"


def test_staff_starts_an_ingest_and_follows_it(staff):
    services.model_create(actor=None, org="acme", name="tiny")
    uri = stage({"config.json": b"{}"})

    started = client_for(staff).post(
        "/api/v1/models/acme/tiny/ingests/",
        {"version": "v1", "artifacts": {"base": uri}},
        format="json",
    )
    detail = client_for(staff).get(f"/api/v1/ingests/{started.json()['id']}/")

    assert started.status_code == 202
    assert detail.json()["state"] == "hashing"
    assert detail.json()["files"][0]["path"] == "config.json"
    assert IngestJob.objects.get().created_by == staff


def test_refused_ingest_is_a_clear_error(staff):
    services.model_create(actor=None, org="acme", name="tiny")

    response = client_for(staff).post(
        "/api/v1/models/acme/tiny/ingests/",
        {"version": "v1", "artifacts": {"base": "s3://weightgate-staging/tests/none/"}},
        format="json",
    )
    malformed = client_for(staff).post(
        "/api/v1/models/acme/tiny/ingests/", {"version": "v1"}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_source"
    assert "no files under" in response.json()["error"]["message"]
    assert malformed.status_code == 400
    assert "artifacts" in malformed.json()["error"]["detail"]


def test_unlock_lifecycle_through_the_api(staff):
    make_release(org="acme", name="tiny")
    alice = make_manager("alice")
    when = (datetime.now(UTC) + timedelta(days=3)).isoformat()

    scheduled = client_for(staff).post(
        "/api/v1/unlocks/schedule",
        {
            "model": "acme/tiny",
            "version": "v1",
            "artifacts": ["base"],
            "target_phase": "open",
            "not_before": when,
        },
        format="json",
    )
    unlock_id = scheduled.json()["id"]
    own = client_for(staff).post(f"/api/v1/unlocks/{unlock_id}/approve", {}, format="json")
    approved = client_for(alice).post(
        f"/api/v1/unlocks/{unlock_id}/approve", {"comment": "evals look fine"}, format="json"
    )
    no_reason = client_for(alice).post(f"/api/v1/unlocks/{unlock_id}/cancel", {}, format="json")
    moved = client_for(alice).post(
        f"/api/v1/unlocks/{unlock_id}/reschedule", {"not_before": when}, format="json"
    )
    listed = client_for(staff).get("/api/v1/unlocks/?state=awaiting_approval")

    assert scheduled.status_code == 201
    assert scheduled.json()["state"] == "awaiting_approval"
    assert scheduled.json()["artifacts"] == ["base"]
    assert own.status_code == 409
    assert own.json()["error"]["code"] == "self_approval"
    assert approved.json()["approvals"][0]["approver"] == "alice"
    assert no_reason.status_code == 400
    assert moved.json()["approvals"] == []
    assert [u["id"] for u in listed.json()["results"]] == [unlock_id]


def test_a_time_without_offset_is_taken_as_utc_and_garbage_refused(staff):
    make_release(org="acme", name="tiny")
    body = {"model": "acme/tiny", "version": "v1", "artifacts": ["base"], "target_phase": "open"}

    naive = client_for(staff).post(
        "/api/v1/unlocks/schedule", {**body, "not_before": "2030-01-01T09:00:00"}, format="json"
    )
    garbage = client_for(staff).post(
        "/api/v1/unlocks/schedule", {**body, "not_before": "next tuesday"}, format="json"
    )

    assert naive.status_code == 201
    assert Unlock.objects.get().not_before == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    assert garbage.status_code == 400
    assert "not_before" in garbage.json()["error"]["detail"]


@pytest.fixture
def partly_open(staff):
    version, _ = ingest_now(
        artifacts={
            "base": sample_model_files(seed=os.getpid() + 7),
            "tokenizer": sample_tokenizer_files(),
        }
    )
    tokenizer = version.artifacts.get(name="tokenizer")
    services.artifact_set_phase(actor=staff, artifact=tokenizer, phase=Phase.OPEN)
    return version


def test_signature_of_a_visible_artifact_verifies_with_model_signing(partly_open, tmp_path):
    response = client_for().get("/api/v1/models/acme/llm/versions/v1/signature?artifact=tokenizer")
    keys = client_for().get("/api/v1/signing-keys/").json()["results"]
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for path, body in sample_tokenizer_files().items():
        (folder / path).write_bytes(body)
    (tmp_path / "model.sig").write_text(json.dumps(response.json()))
    key = next(k for k in keys if k["kid"] == response["X-Signing-Key-Id"])
    (tmp_path / "key.pem").write_text(key["public_pem"])
    tool = str(Path(sys.executable).parent / "model_signing")

    good = subprocess.run(
        [
            tool,
            "verify",
            "key",
            str(folder),
            "--signature",
            str(tmp_path / "model.sig"),
            "--public_key",
            str(tmp_path / "key.pem"),
        ],
        capture_output=True,
        check=False,
    )
    (folder / "tokenizer.json").write_bytes(b"{}")
    tampered = subprocess.run(
        [
            tool,
            "verify",
            "key",
            str(folder),
            "--signature",
            str(tmp_path / "model.sig"),
            "--public_key",
            str(tmp_path / "key.pem"),
        ],
        capture_output=True,
        check=False,
    )

    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    assert "private" not in json.dumps(keys)
    assert good.returncode == 0, good.stderr
    assert tampered.returncode != 0


def test_whole_version_signature_only_for_those_who_see_every_artifact(partly_open, staff):
    url = "/api/v1/models/acme/llm/versions/v1/signature"

    public = client_for().get(url)
    hidden_part = client_for().get(url + "?artifact=base")
    everything = client_for(staff).get(url)

    assert public.status_code == 404
    assert public.json()["error"]["code"] == "signature_not_found"
    assert hidden_part.status_code == 404
    assert everything.status_code == 200
    names = {r["name"] for r in _resources(everything.json())}
    assert "tokenizer.json" in names
    assert "model.safetensors.index.json" in names


def _resources(bundle):
    import base64

    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return statement["predicate"]["resources"]
