"""The real `huggingface_hub` client against Weightgate's Hub-compatible API, over HTTP (a live
server) and the real object store: gated downloads with a token, GatedRepoError without one, and
open ones anonymously."""

import hashlib
import http.client
import os
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub
import pytest
from huggingface_hub import errors as hf_errors

from licensing import access
from licensing.tokens import token_create
from release import services
from release.models import Phase
from release.sample_weights import sample_model_files, sample_tokenizer_files
from tests.factories import make_user
from tests.licensing.factories import make_license
from tests.staging import ingest_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _hf_home(tmp_path, monkeypatch):
    """A clean client: its own cache and config, no token of the person running the tests."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def release(live_server):
    files = sample_model_files(shards=2, seed=os.getpid() % 1000)
    files["README.md"] = b"# tiny\n"
    version, _ = ingest_now(
        org="acme", name="hubby", artifacts={"base": files, "tokenizer": sample_tokenizer_files()}
    )
    admin = make_user("root", is_staff=True, is_superuser=True)
    base = version.artifacts.get(name="base")
    tokenizer = version.artifacts.get(name="tokenizer")
    services.artifact_set_phase(actor=admin, artifact=base, phase=Phase.GATED)
    services.artifact_set_phase(actor=admin, artifact=tokenizer, phase=Phase.OPEN)
    from licensing.keys import signing_key_ensure

    signing_key_ensure(purpose="grants")
    access.gate_policy_set(actor=admin, model=version.model, license=make_license(actor=admin))
    holder = make_user("holder")
    access.access_grant_direct(model=version.model, user=holder, reviewer=admin)
    _, token = token_create(user=holder, name="hf")
    return version, {**files, **sample_tokenizer_files()}, token


def raw_head(url: str, token: str) -> http.client.HTTPResponse:
    """A HEAD that does not follow redirects: what the Hub client sees first."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.request("HEAD", parts.path, headers={"Authorization": f"Bearer {token}"})
    return connection.getresponse()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_snapshot_download_of_a_gated_model_with_a_token(release, live_server, tmp_path):
    version, files, token = release

    folder = huggingface_hub.snapshot_download(
        "acme/hubby",
        revision="v1",
        endpoint=live_server.url,
        token=token,
        cache_dir=tmp_path / "cache",
    )

    got = {p.relative_to(folder).as_posix(): p for p in Path(folder).rglob("*") if p.is_file()}
    assert set(got) == set(files)
    for path, body in files.items():
        assert digest(got[path]) == hashlib.sha256(body).hexdigest()
    assert Path(folder).name == version.commit  # the client keys its cache by our commit id


def test_hf_hub_download_by_commit_and_main(release, live_server, tmp_path):
    version, files, token = release

    by_commit = huggingface_hub.hf_hub_download(
        "acme/hubby",
        "config.json",
        revision=version.commit,
        endpoint=live_server.url,
        token=token,
        cache_dir=tmp_path / "a",
    )
    by_main = huggingface_hub.hf_hub_download(
        "acme/hubby", "tokenizer.json", endpoint=live_server.url, cache_dir=tmp_path / "b"
    )

    assert Path(by_commit).read_bytes() == files["config.json"]
    assert Path(by_main).read_bytes() == files["tokenizer.json"]


def test_gated_file_without_a_token_raises_gated_repo_error(release, live_server, tmp_path):
    with pytest.raises(hf_errors.GatedRepoError) as refused:
        huggingface_hub.hf_hub_download(
            "acme/hubby", "config.json", revision="v1", endpoint=live_server.url, cache_dir=tmp_path
        )

    assert refused.value.response.status_code == 401
    assert "request access at" in str(refused.value)


def test_gated_file_with_a_token_but_no_grant_raises_gated_repo_error(
    release, live_server, tmp_path
):
    stranger = make_user("stranger")
    _, token = token_create(user=stranger, name="hf")

    with pytest.raises(hf_errors.GatedRepoError) as refused:
        huggingface_hub.hf_hub_download(
            "acme/hubby",
            "config.json",
            revision="v1",
            endpoint=live_server.url,
            token=token,
            cache_dir=tmp_path,
        )

    assert refused.value.response.status_code == 403


def test_open_files_download_anonymously(release, live_server, tmp_path):
    _, files, _ = release

    path = huggingface_hub.hf_hub_download(
        "acme/hubby", "tokenizer.json", revision="v1", endpoint=live_server.url, cache_dir=tmp_path
    )

    assert Path(path).read_bytes() == files["tokenizer.json"]


def test_not_found_errors_map_to_the_clients_exceptions(release, live_server, tmp_path):
    _, _, token = release
    common = {"endpoint": live_server.url, "token": token, "cache_dir": tmp_path}

    with pytest.raises(hf_errors.RepositoryNotFoundError):
        huggingface_hub.hf_hub_download("acme/nothing", "config.json", **common)
    with pytest.raises(hf_errors.RevisionNotFoundError):
        huggingface_hub.hf_hub_download("acme/hubby", "config.json", revision="v9", **common)
    with pytest.raises(hf_errors.EntryNotFoundError):
        huggingface_hub.hf_hub_download("acme/hubby", "missing.json", revision="v1", **common)


def test_model_info_tree_and_whoami(release, live_server):
    version, files, token = release
    api = huggingface_hub.HfApi(endpoint=live_server.url, token=token)

    info = api.model_info("acme/hubby", revision="v1")
    tree = list(api.list_repo_tree("acme/hubby", revision="v1", recursive=True))
    me = api.whoami()

    assert info.sha == version.commit
    assert info.siblings is not None
    assert {s.rfilename for s in info.siblings} == set(files)
    shard = next(e for e in tree if e.path == "model-00001-of-00002.safetensors")
    assert isinstance(shard, huggingface_hub.hf_api.RepoFile)
    assert shard.lfs is not None
    assert shard.lfs.sha256 == hashlib.sha256(files[shard.path]).hexdigest()
    assert shard.size == len(files[shard.path])
    assert me["name"] == "holder"


def test_resolve_answers_carry_the_hub_headers_and_no_xet(release, live_server):
    version, files, token = release
    url = f"{live_server.url}/acme/hubby/resolve/v1/config.json"

    head = raw_head(url, token)
    missing = raw_head(f"{live_server.url}/acme/hubby/resolve/v1/nope.json", token)

    assert head.status == 302
    assert head.headers["X-Repo-Commit"] == version.commit
    assert (
        head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(files["config.json"]).hexdigest()
    )
    assert head.headers["X-Linked-Size"] == str(len(files["config.json"]))
    assert not any(h.lower().startswith("x-xet") for h in head.headers)
    assert "Content-Security-Policy" not in head.headers  # no document: nothing to protect
    assert missing.status == 404
    assert missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == version.commit


HF_CLIENTS = Path(__file__).resolve().parents[2] / ".venv" / "hf-clients"
OLD_CLIENT_SCRIPT = """
import hashlib, json, pathlib, sys
import huggingface_hub
endpoint, token, cache = sys.argv[1:4]
folder = huggingface_hub.snapshot_download(
    "acme/hubby", revision="v1", endpoint=endpoint, token=token, cache_dir=cache)
files = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
         for p in pathlib.Path(folder).rglob("*") if p.is_file()}
try:
    huggingface_hub.hf_hub_download("acme/hubby", "config.json", revision="v1",
                                    endpoint=endpoint, cache_dir=cache + "-anon")
    gated = "downloaded"
except Exception as error:
    gated = type(error).__name__
print(json.dumps({"version": huggingface_hub.__version__, "files": files, "gated": gated}))
"""


@pytest.mark.parametrize("client_version", ["0.36.2", "1.21.0"])
def test_older_hub_clients_download_too(release, live_server, tmp_path, client_version):
    """0.x needs `siblings` and writes an empty file when a redirect lacks X-Linked-Size; 1.x
    reads the tree; both must get every byte."""
    import json
    import subprocess
    import sys

    folder = HF_CLIENTS / client_version
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: `make install` puts the older clients there")
    _, files, token = release
    env = {
        **os.environ,
        "PYTHONPATH": str(folder),
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }

    run = subprocess.run(
        [sys.executable, "-c", OLD_CLIENT_SCRIPT, live_server.url, token, str(tmp_path / "c")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["version"] == client_version
    assert result["files"] == {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}
    assert result["gated"] == "GatedRepoError"
