"""The `weightgate` CLI against a live server and the real object store: login, parallel ranged
downloads that resume and verify (sha256 and the version signature), refusal of corrupted bytes
and of gated files without access, `verify DIR`, and `grant verify`."""

import array
import contextlib
import hashlib
import http.client
import http.server
import json
import os
import random
import signal
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
import trustme
from django.conf import settings as settings_module

from licensing import access
from licensing.keys import signing_key_ensure
from licensing.models import Grant
from licensing.tokens import token_create
from release import services
from release.models import Phase
from release.sample_weights import sample_model_files, sample_tokenizer_files
from tests.factories import make_user
from tests.licensing.factories import make_license
from tests.staging import ingest_now, overwrite
from weightgate_cli import download as download_module
from weightgate_cli.catalog import RemoteFile, files_select
from weightgate_cli.config import config_load
from weightgate_cli.disk import ALIGN, PartWriter
from weightgate_cli.download import (
    DEFAULT_THRESHOLD,
    InOrderDigest,
    PartFile,
    range_size,
    size_parse,
)
from weightgate_cli.errors import CliError
from weightgate_cli.main import main
from weightgate_cli.transport import TransferError, Transport, ssl_context

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024
SHARD = "model-00001-of-00003.safetensors"
WEIGHTGATE = Path(sys.executable).with_name("weightgate")


@pytest.fixture(autouse=True)
def _cli_env(tmp_path, monkeypatch):
    """A clean client: its own config file, none of the runner's credentials, 1 MiB ranges so
    that a few-MiB shard takes the parallel ranged path, and quick retries."""
    monkeypatch.setenv("WEIGHTGATE_CONFIG", str(tmp_path / "config" / "weightgate.json"))
    for name in ("WEIGHTGATE_TOKEN", "WEIGHTGATE_ENDPOINT", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEIGHTGATE_CHUNK_SIZE", "1M")
    monkeypatch.setenv("WEIGHTGATE_PARALLEL_THRESHOLD", "1M")
    monkeypatch.setenv("WEIGHTGATE_RETRIES", "2")
    monkeypatch.setenv("WEIGHTGATE_BACKOFF", "0.01")


@pytest.fixture
def release(live_server, monkeypatch):
    """acme/cli v1: `base` gated (three ~3 MiB shards), `tokenizer` open, `vision` proprietary
    (so a developer gets per-artifact signatures); `holder` has a grant and a token."""
    files = sample_model_files(layers=4, hidden=384, shards=3, seed=os.getpid() % 1000)
    version, sources = ingest_now(
        org="acme",
        name="cli",
        artifacts={
            "base": files,
            "tokenizer": sample_tokenizer_files(),
            "vision": {"vision/config.json": b'{"image_size": 224}'},
        },
    )
    admin = make_user("root", is_staff=True, is_superuser=True)
    artifacts = {a.name: a for a in version.artifacts.all()}
    services.artifact_set_phase(actor=admin, artifact=artifacts["base"], phase=Phase.GATED)
    services.artifact_set_phase(actor=admin, artifact=artifacts["tokenizer"], phase=Phase.OPEN)
    signing_key_ensure(purpose="grants")
    access.gate_policy_set(actor=admin, model=version.model, license=make_license(actor=admin))
    holder = make_user("holder")
    access.access_grant_direct(model=version.model, user=holder, reviewer=admin)
    _, token = token_create(user=holder, name="cli")
    monkeypatch.setenv("WEIGHTGATE_ENDPOINT", live_server.url)
    return {
        "version": version,
        "files": {**files, **sample_tokenizer_files()},  # what the holder may download
        "sources": sources,
        "token": token,
        "admin": admin,
        "holder": holder,
    }


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    """Every file of a download, the CLI's own folder aside."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".weightgate" not in p.relative_to(folder).parts
    }


# --- login --------------------------------------------------------------------------------------


def test_login_validates_the_token_and_writes_a_private_config(release, live_server, capsys):
    path = Path(os.environ["WEIGHTGATE_CONFIG"])

    code = main(["login", "--endpoint", live_server.url + "/", "--token", release["token"]])

    assert code == 0, capsys.readouterr().err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"endpoint": live_server.url, "token": release["token"]}
    assert "as holder" in capsys.readouterr().err


def test_login_refuses_an_unknown_token_and_saves_nothing(release, live_server, capsys):
    code = main(["login", "--endpoint", live_server.url, "--token", "wg_" + "x" * 40])

    assert code == 3
    assert "not a Weightgate token" in capsys.readouterr().err
    assert not Path(os.environ["WEIGHTGATE_CONFIG"]).exists()


def test_a_config_readable_by_others_is_tightened(tmp_path, capsys):
    path = Path(os.environ["WEIGHTGATE_CONFIG"])
    path.parent.mkdir(parents=True)
    path.write_text('{"endpoint": "http://example.test", "token": "wg_secret"}')
    path.chmod(0o644)

    assert config_load()["token"] == "wg_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "readable by others" in capsys.readouterr().err


def test_the_saved_token_is_not_sent_to_another_endpoint(release, live_server, capsys, tmp_path):
    main(["login", "--endpoint", live_server.url, "--token", release["token"]])

    # The same server under another name: the saved token is for the first one only.
    other = live_server.url.replace("localhost", "127.0.0.1")
    code = main(["download", "acme/cli", "--endpoint", other, "--dir", str(tmp_path / "d")])

    assert other != live_server.url
    assert code == 3
    assert "request access" in capsys.readouterr().err


# --- download -----------------------------------------------------------------------------------


def ranges_counted(monkeypatch):
    """The path of every range the downloader fetches, in a list that fills as it goes."""
    ranges = []
    fetch_range = download_module.Downloader._fetch_range

    def counted(self, job, index, task):
        ranges.append(job.remote.path)
        return fetch_range(self, job, index, task)

    monkeypatch.setattr(download_module.Downloader, "_fetch_range", counted)
    return ranges


def test_download_of_a_sharded_gated_model_matches_digests_and_signature(
    release, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws its progress bars as on a terminal
    ranges = ranges_counted(monkeypatch)
    folder = tmp_path / "model"

    code = main(["download", "acme/cli", "--dir", str(folder), "--workers", "4"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == str(folder)
    assert tree(folder) == release["files"]
    assert ranges.count(SHARD) == -(-len(release["files"][SHARD]) // MiB) > 2  # 1 MiB ranges
    manifest = json.loads((folder / ".weightgate" / "manifest.json").read_text())
    assert manifest["commit"] == release["version"].commit
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        path: digest(body) for path, body in release["files"].items()
    }
    # `vision` is proprietary: the holder cannot see it, so each artifact's own signature.
    assert sorted(s["artifact"] for s in manifest["signatures"]) == ["base", "tokenizer"]
    assert "signature verified" in err


def test_download_again_skips_files_already_in_place(release, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    folder = tmp_path / "model"
    assert main(["download", "acme/cli", "--dir", str(folder)]) == 0
    capsys.readouterr()

    code = main(["download", "acme/cli", "--dir", str(folder)])

    assert code == 0
    assert f"{len(release['files'])} files were already in place" in capsys.readouterr().err


def test_include_and_exclude_select_paths(release, tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    folder = tmp_path / "json"

    code = main(
        [
            "download",
            "acme/cli",
            "--revision",
            "v1",
            "--include",
            "*.json",
            "--exclude",
            "config.json",
            "--dir",
            str(folder),
        ]
    )

    assert code == 0
    assert set(tree(folder)) == {"model.safetensors.index.json", "tokenizer.json"}


def test_an_interrupted_download_resumes_with_only_the_missing_bytes(
    release, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    folder = tmp_path / "model"
    size = len(release["files"][SHARD])
    written = {"bytes": 0}
    real_write = PartWriter.write

    def dies_midway(writer, buffer, base, start, stop, *, direct):
        # However the network happens to chunk the stream: exactly 1.5 MiB gets written.
        if writer.path.name == SHARD + ".part":
            room = max(0, 3 * MiB // 2 - written["bytes"])
            if stop - start >= room:
                real_write(writer, buffer, base, start, start + room, direct=direct)
                written["bytes"] += room
                raise OSError("the disk went away")
            written["bytes"] += stop - start
        return real_write(writer, buffer, base, start, stop, direct=direct)

    def counts(writer, buffer, base, start, stop, *, direct):
        if writer.path.name == SHARD + ".part":
            written["bytes"] += stop - start
        return real_write(writer, buffer, base, start, stop, direct=direct)

    # given a download of the shard that dies after 1.5 MiB
    monkeypatch.setattr(PartWriter, "write", dies_midway)
    first = main(["download", "acme/cli", "--include", SHARD, "--dir", str(folder)])
    state = json.loads((folder / (SHARD + ".part.json")).read_text())
    done_before = sum(done for _, _, done in state["ranges"])
    assert first == 1
    assert "the disk went away" in capsys.readouterr().err
    assert not (folder / SHARD).exists()
    assert 0 < done_before < size

    # when it runs again
    written["bytes"] = 0
    monkeypatch.setattr(PartWriter, "write", counts)
    second = main(["download", "acme/cli", "--include", SHARD, "--dir", str(folder)])

    # then only the missing bytes were fetched, and the result verifies
    assert second == 0, capsys.readouterr().err
    assert written["bytes"] == size - done_before
    assert (folder / SHARD).read_bytes() == release["files"][SHARD]
    assert not (folder / (SHARD + ".part")).exists()
    assert not (folder / (SHARD + ".part.json")).exists()
    assert main(["verify", str(folder)]) == 0


@contextlib.contextmanager
def store_front(monkeypatch, send):
    """Download URLs point at a server in front of the object store, which fetches the store's
    answer and gives it to `send(handler, answer, body)` to pass on (or mangle). Yields the
    (client port, Range) of every request it got."""
    store = urlsplit(settings_module.S3_ENDPOINT_URL)
    seen = []

    def answer(handler):
        seen.append((handler.client_address[1], handler.headers.get("Range")))
        # The presigned URL signs the store's host.
        _relay(
            handler,
            store.hostname or "",
            store.port,
            handler.path,
            host_header=store.netloc,
            send=send,
        )

    with serving(answer) as url:
        real_url = download_module.Downloader._url

        def via_front(self, job):
            real_url(self, job)
            job.url = job.url.replace(f"{store.scheme}://{store.netloc}", url, 1)

        monkeypatch.setattr(download_module.Downloader, "_url", via_front)
        yield seen


def _as_is(handler, reply, body):
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _cut_first_after(count, how):
    """A `store_front` sender: the first answer stops after `count` bytes of its body, once the
    client has them all, with a TCP reset or a plain close; the others go as they are."""
    import fcntl  # Linux only, as TIOCOUTQ on a socket
    import termios

    answered = []

    def send(handler, reply, body):
        answered.append(True)
        if len(answered) > 1:
            _as_is(handler, reply, body)
            return
        sock = handler.connection
        # Headers and body in one segment, so that reading the headers buffers body bytes too.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:count])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        for _ in range(500):  # until the client has acknowledged every byte (5 s at most)
            unsent = array.array("i", [0])
            fcntl.ioctl(sock, termios.TIOCOUTQ, unsent)
            if not unsent[0]:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the client did not take the bytes sent")
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        handler.close_connection = True

    return send


@pytest.mark.skipif(sys.platform != "linux", reason="TIOCOUTQ on a socket is Linux's")
@pytest.mark.parametrize(
    ("count", "how"), [(4000, "reset"), (3 * MiB // 2, "reset"), (3 * MiB // 2, "close")]
)
def test_a_connection_lost_mid_range_keeps_every_byte_that_arrived(
    release, tmp_path, monkeypatch, count, how
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    monkeypatch.setenv("WEIGHTGATE_CHUNK_SIZE", "64M")  # the shard in one range
    folder = tmp_path / "model"
    shard = release["files"][SHARD]
    last = len(shard) - 1

    # given a network that loses the connection once `count` bytes of the shard came through
    with store_front(monkeypatch, _cut_first_after(count, how)) as seen:
        code = main(["download", "acme/cli", "--include", SHARD, "--dir", str(folder)])

    # then the retry asks for the bytes after those that arrived, and the download completes
    assert code == 0
    assert [asked for _, asked in seen] == [f"bytes=0-{last}", f"bytes={count}-{last}"]
    assert (folder / SHARD).read_bytes() == shard


def test_ranges_one_after_the_other_share_one_connection(release, tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    shard = release["files"][SHARD]

    with store_front(monkeypatch, _as_is) as seen:
        args = ["download", "acme/cli", "--include", SHARD, "--dir", str(tmp_path)]
        assert main([*args, "--workers", "1"]) == 0

    assert len(seen) == -(-len(shard) // MiB) > 2  # 1 MiB ranges
    assert len({port for port, _ in seen}) == 1  # each body read to its end: kept alive
    assert (tmp_path / SHARD).read_bytes() == shard


def test_a_store_that_sends_more_than_the_range_is_refused(release, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])

    def send_more(handler, reply, body):  # a Content-Length past the range, and the bytes
        handler.send_header("Content-Length", str(len(body) + 10))
        handler.end_headers()
        handler.wfile.write(body + b"0123456789")

    with store_front(monkeypatch, send_more):
        code = main(["download", "acme/cli", "--include", SHARD, "--dir", str(tmp_path)])

    assert code == 1
    assert "the object store sent too much" in capsys.readouterr().err
    assert not (tmp_path / SHARD).exists()


def direct_bytes_counted(monkeypatch):
    """{path of a .part: [(file offset, bytes that went direct)] for each write}."""
    writes: dict[str, list[tuple[int, int]]] = {}
    real_write = PartWriter.write

    def counted(writer, buffer, base, start, stop, *, direct):
        went = real_write(writer, buffer, base, start, stop, direct=direct)
        writes.setdefault(writer.path.name, []).append((base + start, went))
        return went

    monkeypatch.setattr(PartWriter, "write", counted)
    return writes


@pytest.mark.parametrize("setting", [None, "0", "off", "fasle"])
def test_whole_pages_are_written_direct_unless_turned_off(
    release, tmp_path, monkeypatch, capsys, setting, direct_works
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    if setting is not None:
        monkeypatch.setenv("WEIGHTGATE_DIRECT_IO", setting)
    writes = direct_bytes_counted(monkeypatch)
    folder = tmp_path / "model"
    args = ["download", "acme/cli", "--include", "*.safetensors", "--dir", str(folder)]

    code = main([*args, "--workers", "1"])  # ranges in order: each at the hashed point

    if setting == "fasle":
        assert code == 2
        assert "WEIGHTGATE_DIRECT_IO must be 1 or 0" in capsys.readouterr().err
        return
    assert code == 0
    direct = sum(went for path in writes.values() for _, went in path)
    if setting is None and direct_works:
        assert direct > 0.9 * sum(len(b) for p, b in release["files"].items() if ".safe" in p)
    else:
        assert direct == 0
    assert tree(folder) == {p: b for p, b in release["files"].items() if p.endswith(".safetensors")}


def test_a_range_ahead_of_the_hashed_point_goes_through_the_page_cache(
    release, tmp_path, monkeypatch, direct_works
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    size = len(release["files"][SHARD])
    half = -(-size // 2)
    monkeypatch.setenv("WEIGHTGATE_CHUNK_SIZE", str(half))  # two ranges
    writes = direct_bytes_counted(monkeypatch)
    second_done = threading.Event()
    receive = download_module.Downloader._receive

    def second_range_first(self, job, index, *args):
        if index == 0:
            assert second_done.wait(30)
        try:
            return receive(self, job, index, *args)
        finally:
            if index == 1:
                second_done.set()

    monkeypatch.setattr(download_module.Downloader, "_receive", second_range_first)
    folder = tmp_path / "model"

    code = main(["download", "acme/cli", "--include", SHARD, "--dir", str(folder)])

    assert code == 0
    ahead = [went for offset, went in writes[SHARD + ".part"] if offset >= size // 2]
    at_the_hashed_point = [went for offset, went in writes[SHARD + ".part"] if offset < size // 2]
    assert ahead
    assert not any(ahead)  # read back later: from the page cache
    if direct_works:
        assert sum(at_the_hashed_point) == size // 2 // ALIGN * ALIGN  # every whole page
    assert (folder / SHARD).read_bytes() == release["files"][SHARD]


def test_killed_download_resumes_from_the_saved_state(release, tmp_path, monkeypatch):
    """The real thing: the console script is killed (SIGKILL) mid-download, then run again."""
    folder = tmp_path / "model"
    env = {
        **os.environ,
        "WEIGHTGATE_TOKEN": release["token"],
        "WEIGHTGATE_CHUNK_SIZE": "64K",  # many small ranges, so that some finish first
        "WEIGHTGATE_PARALLEL_THRESHOLD": "64K",
    }
    args = [str(WEIGHTGATE), "download", "acme/cli", "--include", "*.safetensors"]
    args += ["--dir", str(folder), "--workers", "2"]
    state = folder / (SHARD + ".part.json")

    # given a download killed once some of the shard is on record
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done_at_kill = 0
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):  # not written yet, or mid-rename
                done_at_kill = sum(d for _, _, d in json.loads(state.read_text())["ranges"])
            if done_at_kill:
                process.kill()
                break
            time.sleep(0.002)
    finally:
        process.kill()
        _, killed_err = process.communicate()
    assert process.returncode == -signal.SIGKILL, killed_err
    assert 0 < done_at_kill < len(release["files"][SHARD])
    assert not (folder / SHARD).exists()

    # when it runs again
    second = subprocess.run(args, env=env, capture_output=True, text=True, check=False)

    # then it picks up where the first run stopped
    assert second.returncode == 0, second.stderr
    assert f"{SHARD}: resuming" in second.stderr
    assert second.stdout.strip() == str(folder)
    for path in ("model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"):
        assert (folder / path).read_bytes() == release["files"][path]


def test_a_file_changed_in_storage_after_sealing_is_refused(release, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    body = bytearray(release["files"][SHARD])
    body[len(body) // 2] ^= 0x01
    overwrite(release["sources"]["base"], SHARD, bytes(body))
    folder = tmp_path / "model"

    code = main(["download", "acme/cli", "--dir", str(folder)])

    err = capsys.readouterr().err
    assert code == 5
    assert f"{SHARD}: sha256 mismatch" in err
    assert "nothing was kept" in err
    assert not (folder / SHARD).exists()
    assert not (folder / (SHARD + ".part")).exists()
    assert not (folder / (SHARD + ".part.json")).exists()
    assert not (folder / ".weightgate").exists()


def test_an_empty_file_downloads_and_verifies(tmp_path, live_server, monkeypatch):
    version, _ = ingest_now(
        org="acme", name="empty", artifacts={"base": {"config.json": b"{}", "empty.txt": b""}}
    )
    artifact = version.artifacts.get()
    admin = make_user("root", is_staff=True, is_superuser=True)
    services.artifact_set_phase(actor=admin, artifact=artifact, phase=Phase.OPEN)
    monkeypatch.setenv("WEIGHTGATE_ENDPOINT", live_server.url)
    folder = tmp_path / "empty"

    code = main(["download", "acme/empty", "--dir", str(folder)])

    assert code == 0
    assert tree(folder) == {"config.json": b"{}", "empty.txt": b""}
    assert main(["verify", str(folder)]) == 0


def test_a_gated_model_without_a_token_fails_with_the_servers_message(
    release, tmp_path, capsys, settings
):
    code = main(["download", "acme/cli", "--include", "*.safetensors", "--dir", str(tmp_path)])

    err = capsys.readouterr().err
    assert code == 3
    assert "acme/cli is gated" in err
    assert f"request access at {settings.SITE_URL}/models/acme/cli" in err
    assert err.count("request access") == 1  # said once, not once per file


def test_open_files_download_anonymously_via_the_console_script(release, live_server, tmp_path):
    folder = tmp_path / "tok"

    result = subprocess.run(
        [str(WEIGHTGATE), "download", "acme/cli", "--include", "tokenizer*", "--dir", str(folder)],
        env={**os.environ, "WEIGHTGATE_ENDPOINT": live_server.url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert tree(folder) == {"tokenizer.json": release["files"]["tokenizer.json"]}
    assert "signature verified" in result.stderr


def _relay(handler, host, port, target, *, host_header=None, send=None):
    """Send the handler's GET on to host:port (with `host_header` as its Host, if given) and its
    answer back, through `send(handler, answer, body)` when given (to pass on or mangle the
    body), the status and headers already sent."""
    upstream = http.client.HTTPConnection(host, port, timeout=30)
    headers = {k: v for k, v in handler.headers.items() if k.lower() != "proxy-connection"}
    if host_header is not None:
        headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        headers["Host"] = host_header
    upstream.request("GET", target, headers=headers)
    answer = upstream.getresponse()
    body = answer.read()
    upstream.close()
    handler.send_response(answer.status)
    for name, value in answer.getheaders():
        if name.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(name, value)
    (send or _as_is)(handler, answer, body)


@contextlib.contextmanager
def serving(do_get, *, tls=None):
    """A local HTTP/1.1 server calling `do_get(handler)` for every GET (over TLS with a server
    context); its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            do_get(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def forward_proxy():
    """A plain-HTTP forward proxy (absolute-form GETs only), recording what it forwarded."""
    seen = []

    def forward(handler):
        target = urlsplit(handler.path)
        seen.append((handler.path, handler.headers.get("Authorization")))
        _relay(handler, target.hostname or "", target.port, f"{target.path}?{target.query}")

    with serving(forward) as url:
        yield url, seen


@contextlib.contextmanager
def front(upstream, answers):
    """In front of `upstream`: a path's next answer from `answers` ({path: [status or
    (status, Location)]}) is given instead of the upstream's; every path asked is recorded."""
    seen = []
    target = urlsplit(upstream)

    def answer(handler):
        path = urlsplit(handler.path).path
        seen.append(path)
        if answers.get(path):
            status, *location = answers[path].pop(0)
            handler.send_response(status)
            for value in location:
                handler.send_header("Location", value)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        _relay(handler, target.hostname or "", target.port, handler.path)

    with serving(answer) as url:
        yield url, seen


def test_downloads_go_through_the_proxy_the_environment_names(release, tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    with forward_proxy() as (proxy, seen):
        monkeypatch.setenv("http_proxy", proxy)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)

        code = main(["download", "acme/cli", "--include", SHARD, "--dir", str(tmp_path)])

    assert code == 0
    assert (tmp_path / SHARD).read_bytes() == release["files"][SHARD]
    store = urlsplit(settings_module.S3_ENDPOINT_URL).netloc
    ranges = [authorization for url, authorization in seen if urlsplit(url).netloc == store]
    assert len(ranges) == -(-len(release["files"][SHARD]) // MiB)  # every 1 MiB range
    assert ranges == [None] * len(ranges)  # the token went to the API only
    assert {a for url, a in seen if urlsplit(url).netloc != store} == {f"Bearer {release['token']}"}


def test_without_a_set_range_size_connections_share_the_bytes(release, tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    monkeypatch.delenv("WEIGHTGATE_CHUNK_SIZE")  # the default plan (threshold still 1 MiB)
    monkeypatch.setattr(download_module, "MIN_RANGE", 64 * 1024)
    ranges = ranges_counted(monkeypatch)
    shards = sorted(p for p in release["files"] if p.endswith(".safetensors"))

    # one connection: each shard whole
    args = ["download", "acme/cli", "--include", "*.safetensors", "--dir", str(tmp_path / "a")]
    assert main([*args, "--workers", "1"]) == 0
    assert sorted(ranges) == shards

    # eight connections for one shard: eight ranges
    ranges.clear()
    args = ["download", "acme/cli", "--include", SHARD, "--dir", str(tmp_path / "b")]
    assert main([*args, "--workers", "8"]) == 0
    assert ranges == [SHARD] * 8
    assert (tmp_path / "b" / SHARD).read_bytes() == release["files"][SHARD]


def test_the_api_is_retried_after_a_503_and_a_redirect_is_never_followed(
    release, live_server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    monkeypatch.setenv("WEIGHTGATE_TIMEOUT", "5")
    version = "/api/v1/models/acme/cli/versions/v1/"
    elsewhere_seen = []

    def elsewhere_answers(handler):
        elsewhere_seen.append(handler.headers.get("Authorization"))
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"{}")

    args = ["download", "acme/cli", "--revision", "v1", "--include", "config.json"]
    with serving(elsewhere_answers) as elsewhere:
        # given a server that answers 503 once
        with front(live_server.url, {version: [(503,)]}) as (endpoint, seen):
            code = main([*args, "--endpoint", endpoint, "--dir", str(tmp_path / "a")])
        assert code == 0, capsys.readouterr().err
        assert seen.count(version) == 2  # asked again, then answered
        assert (tmp_path / "a" / "config.json").read_bytes() == release["files"]["config.json"]

        # given a server that redirects the API elsewhere
        with front(live_server.url, {version: [(302, elsewhere + version)]}) as (endpoint, _):
            code = main([*args, "--endpoint", endpoint, "--dir", str(tmp_path / "b")])
        err = capsys.readouterr().err
        assert code == 1
        assert "redirected" in err
        assert "not followed" in err
    assert elsewhere_seen == []  # the token went nowhere else
    assert not (tmp_path / "b" / "config.json").exists()


@pytest.mark.django_db(transaction=False)
def test_https_is_verified_against_the_trusted_certificates(tmp_path, monkeypatch):
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)

    def hello(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "5")
        handler.end_headers()
        handler.wfile.write(b"hello")

    with serving(hello, tls=server_context) as url:
        assert url.startswith("https://")
        transport = Transport(timeout=5, user_agent="test")
        try:
            # given the server's authority is not trusted: refused, a TransferError
            ssl_context.cache_clear()
            trustme.CA().cert_pem.write_to_path(str(tmp_path / "another.pem"))
            monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "another.pem"))
            with pytest.raises(TransferError, match="CERTIFICATE_VERIFY_FAILED"):
                transport.fetch(url + "/", {}, follow_redirects=False)

            # given it is trusted
            ssl_context.cache_clear()
            authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
            monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
            reply = transport.fetch(url + "/", {}, follow_redirects=False)
        finally:
            transport.close()
            ssl_context.cache_clear()
    assert reply.status_code == 200
    assert reply.content == b"hello"


def test_an_object_store_refusal_says_what_the_store_said(release, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])

    real_url = download_module.Downloader._url

    def broken_url(self, job):
        real_url(self, job)
        job.url = job.url.replace("X-Amz-Signature=", "X-Amz-Signature=0")  # every time

    monkeypatch.setattr(download_module.Downloader, "_url", broken_url)

    code = main(["download", "acme/cli", "--include", "config.json", "--dir", str(tmp_path)])

    err = capsys.readouterr().err
    assert code == 3, err
    assert "the object store refused the download URL twice" in err
    assert "signature" in err.lower()  # the store's own <Message>, not just "HTTP 403"
    assert not (tmp_path / "config.json").exists()


def test_an_expired_download_url_is_requested_again_once(release, tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    asked = []
    real_url = download_module.Downloader._url

    def first_url_expired(self, job):
        real_url(self, job)
        asked.append(job.remote.path)
        if asked.count(job.remote.path) == 1:  # what the store says to a stale signature
            job.url = job.url.replace("X-Amz-Signature=", "X-Amz-Signature=0")

    monkeypatch.setattr(download_module.Downloader, "_url", first_url_expired)

    code = main(["download", "acme/cli", "--include", "config.json", "--dir", str(tmp_path)])

    assert code == 0
    assert asked == ["config.json", "config.json"]


def test_not_found_rate_limited_and_unreachable_have_their_own_messages(
    release, tmp_path, capsys, settings, monkeypatch
):
    assert main(["download", "acme/nothing", "--dir", str(tmp_path)]) == 4
    assert "model acme/nothing not found" in capsys.readouterr().err
    assert main(["download", "acme/cli", "--revision", "v9", "--dir", str(tmp_path)]) == 4
    assert "has no version 'v9'" in capsys.readouterr().err

    settings.DOWNLOAD_RATE_PER_MINUTE = 1
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    monkeypatch.setenv("WEIGHTGATE_MAX_RETRY_AFTER", "0")  # report, do not wait a minute
    code = main(["download", "acme/cli", "--include", "*.json", "--dir", str(tmp_path / "r")])
    assert code == 1
    assert "rate limited: this token made more than 1 requests this minute" in (
        capsys.readouterr().err
    )

    code = main(["download", "acme/cli", "--endpoint", "http://127.0.0.1:9", "--dir", "x"])
    assert code == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["download", "not-a-repo-id"]) == 2


# --- verify DIR ---------------------------------------------------------------------------------


def test_verify_reports_changed_missing_and_extra_files(release, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    folder = tmp_path / "model"
    assert main(["download", "acme/cli", "--dir", str(folder)]) == 0
    assert main(["verify", str(folder), "--model", "acme/cli", "--revision", "v1"]) == 0
    assert "signature verified" in capsys.readouterr().out

    shard = folder / SHARD
    body = bytearray(shard.read_bytes())
    body[100] ^= 0xFF
    shard.write_bytes(bytes(body))
    (folder / "config.json").unlink()
    (folder / "notes.txt").write_text("mine")

    code = main(["verify", str(folder)])

    err = capsys.readouterr().err
    assert code == 5
    assert f"changed: {SHARD}" in err
    assert "missing: config.json" in err
    assert "extra: notes.txt" in err
    assert f"signature: {SHARD}: sha256" in err


def test_verify_catches_a_manifest_edited_to_match_a_changed_file(
    release, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    folder = tmp_path / "model"
    assert main(["download", "acme/cli", "--include", "config.json", "--dir", str(folder)]) == 0
    (folder / "config.json").write_text("{}")
    manifest_path = folder / ".weightgate" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["sha256"] = digest(b"{}")
    manifest_path.write_text(json.dumps(manifest))

    code = main(["verify", str(folder)])

    assert code == 5
    assert "signature: config.json: sha256" in capsys.readouterr().err


def test_verify_a_folder_without_manifest_against_the_server(
    release, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WEIGHTGATE_TOKEN", release["token"])
    folder = tmp_path / "elsewhere"
    for path, body in release["files"].items():
        folder.joinpath(path).parent.mkdir(parents=True, exist_ok=True)
        folder.joinpath(path).write_bytes(body)

    assert main(["verify", str(folder)]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert main(["verify", str(folder), "--model", "acme/cli"]) == 0


# --- grant verify -------------------------------------------------------------------------------


def test_grant_verify_online_and_offline_valid_then_revoked(release, live_server, tmp_path, capsys):
    grant = Grant.objects.get(user=release["holder"])
    token_file = tmp_path / "grant.jwt"
    token_file.write_text(grant.token + "\n")

    assert main(["grant", "verify", str(token_file), "--endpoint", live_server.url]) == 0
    assert f"grant valid: {grant.jti} for user {release['holder'].pk} on acme/cli" in (
        capsys.readouterr().out
    )

    access.grant_revoke(grant=grant, actor=release["admin"], reason="license breach")

    assert main(["grant", "verify", str(token_file), "--endpoint", live_server.url]) == 5
    assert "grant NOT valid: revoked" in capsys.readouterr().err

    # Offline, with saved copies of the two public documents.
    jwks = tmp_path / "jwks.json"
    jwks.write_text(httpx2.get(f"{live_server.url}/.well-known/jwks.json").text)
    revocations = tmp_path / "revocations.jwt"
    revocations.write_text(
        httpx2.get(f"{live_server.url}/.well-known/weightgate-revocations.jwt").text
    )
    offline = ["--jwks", f"@{jwks}", "--revocations", f"@{revocations}"]
    assert main(["grant", "verify", str(token_file), *offline]) == 5
    assert "revoked" in capsys.readouterr().err
    tampered = tmp_path / "tampered.jwt"
    header, payload, signature = grant.token.split(".")
    tampered.write_text(f"{header}.{payload}.{signature[:-4]}AAAA")
    assert main(["grant", "verify", str(tampered), *offline]) == 5
    assert "bad signature" in capsys.readouterr().err


# --- pure parts, no server ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=False)
def test_globs_sizes_and_unsafe_listings():
    files = [RemoteFile(p, 1, "0" * 64, "a") for p in ("a.json", "sub/b.json", "w.safetensors")]

    assert [f.path for f in files_select(files, include=["*.json"], exclude=[])] == [
        "a.json",
        "sub/b.json",
    ]
    assert [f.path for f in files_select(files, include=["sub/"], exclude=[])] == ["sub/b.json"]
    assert [f.path for f in files_select(files, include=[], exclude=["*.json"])] == [
        "w.safetensors"
    ]
    assert size_parse("64M") == 64 * MiB
    assert size_parse("16MiB") == 16 * MiB
    assert size_parse("1024") == 1024
    for unsafe in (
        "../etc/passwd",
        "/abs",
        "a/../../b",
        ".git/config",
        ".weightgate/manifest.json",
    ):
        with pytest.raises(CliError, match="refused"):
            RemoteFile.parse({"path": unsafe, "size": 1, "sha256": "0" * 64})


@pytest.mark.django_db(transaction=False)
def test_files_are_split_only_as_far_as_it_keeps_every_connection_busy(tmp_path):
    def ranges(size, chunk):
        part = PartFile(tmp_path / f"{size}-{chunk}", RemoteFile("w", size, "0" * 64, "a"))
        part.open(chunk_size=chunk, threshold=DEFAULT_THRESHOLD)
        return [(start, end) for start, end, _ in part.ranges]

    shard = 64 * MiB + 80  # a safetensors shard: 64 MiB of weights and its header
    # eight shards on eight connections: one range each, as parallel curl would fetch them
    assert ranges(shard, range_size(8 * shard, 8)) == [(0, shard)]
    # one large file: one range per connection, equal, tiling the file
    cuts = ranges(8 * shard, range_size(8 * shard, 8))
    assert [end - start for start, end in cuts] == [shard] * 8
    assert [start for start, _ in cuts] == [i * shard for i in range(8)]
    # two connections for 200 MiB: 100 MiB ranges; small downloads never below the minimum
    assert len(ranges(200 * MiB, range_size(200 * MiB, 2))) == 2
    assert range_size(100 * MiB, 8) == download_module.MIN_RANGE
    # at or under the threshold a file is one range, whatever the range size
    assert ranges(DEFAULT_THRESHOLD, MiB) == [(0, DEFAULT_THRESHOLD)]


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize("seed", range(5))
def test_the_digest_of_ranges_written_in_any_order_is_the_files(tmp_path, seed):
    """Chunks of four ranges land in a random interleaving, as concurrent ranges do; a chunk at
    the hashed point is hashed as written, the others are read back. The first 100,000 bytes are
    an earlier run's, on disk already."""
    rng = random.Random(seed)
    body = rng.randbytes(MiB + 12_345)
    remote = RemoteFile("w.bin", len(body), digest(body), "a")
    part = PartFile(tmp_path / "w.bin", remote)
    part.open(chunk_size=len(body) // 4 + 1, threshold=1)
    part.part.write_bytes(body[:100_000] + bytes(len(body) - 100_000))
    part.advance(0, 100_000)
    hashed = InOrderDigest(part)
    hashed.catch_up()
    cursors = {index: part.position(index)[0] for index in part.missing()}

    with open(part.part, "r+b") as handle:
        while cursors:
            index = rng.choice(sorted(cursors))
            start, end = cursors[index], part.position(index)[1]
            chunk = body[start : min(end, start + rng.randrange(1, 100_000))]
            handle.seek(start)
            handle.write(chunk)
            handle.flush()
            part.advance(index, len(chunk))
            hashed.written(start, chunk)
            cursors[index] = start + len(chunk)
            if cursors[index] == end:
                del cursors[index]
                hashed.catch_up()
    hashed.catch_up()

    assert part.part.read_bytes() == body
    assert hashed.position == len(body)
    assert hashed.hexdigest() == digest(body)


@pytest.mark.django_db(transaction=False)
def test_the_cli_imports_no_django():
    code = (
        "import sys, weightgate_cli.main; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'celery', 'config')]; "
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
