"""Faults during a publish, with the real processes: a transfer worker killed with SIGKILL at
random points of the byte stream, the object store crashing mid-push, Redis stopping around a
tick. The store and Redis that fail are private ones (tests/private_services.py) that these
tests crash and restart; the shared services are never touched.

Each kill trial draws its file sizes and its kill point from `random.Random(seed)`; the seed is in
the test id and in every failure message. Replay or explore with
`WEIGHTGATE_FAULT_SEEDS=7,1234 pytest tests/release/test_faults.py -k killed`.
"""

import hashlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.db.models import Sum
from django.test import Client
from rest_framework.test import APIClient

from config.celery import app
from licensing import access
from licensing.keys import signing_key_ensure
from licensing.models import AuditEvent
from licensing.tokens import token_create
from release import services
from release.models import (
    Artifact,
    Blob,
    File,
    FileParts,
    IngestJob,
    Phase,
    Unlock,
    UnlockFile,
    Version,
    blob_key,
)
from release.sample_weights import sample_model_files
from release.storage import s3_client
from tests.celery_worker import TEST_QUEUE, celery_worker, wait_for
from tests.factories import make_user, unlock_approved
from tests.licensing.factories import gated_model
from tests.private_services import (
    private_redis,
    private_s3,
    redis_pointed_at,
    s3_pointed_at,
    s3_settings_env,
)
from tests.staging import stage

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024
PART_MIB = 5  # S3's smallest part: files above it go up as multipart uploads of 5 MiB parts
LEASE_SECONDS = 1  # a dead worker's push is handed on this long after its last sign of life
TICK_SECONDS = 0.5  # how often these tests play beat's part
WORKER_SETTINGS = {
    "S3_PART_SIZE_MIB": str(PART_MIB),
    "UNLOCK_PUSH_LEASE_SECONDS": str(LEASE_SECONDS),
}

SEEDS = [
    int(seed) for seed in os.environ.get("WEIGHTGATE_FAULT_SEEDS", "").split(",") if seed.strip()
] or list(range(10))


@pytest.fixture
def short_lease(settings):
    """The test process runs the tick: it must hand on dead pushes as soon as the workers do."""
    settings.UNLOCK_PUSH_LEASE_SECONDS = LEASE_SECONDS
    settings.S3_PART_SIZE_MIB = PART_MIB


# --- reading what happened ---------------------------------------------------------------------


def stored_sha256(bucket: str, sha256: str) -> tuple[str, int]:
    """Stream a blob back from the store: its digest and size."""
    digest, size = hashlib.sha256(), 0
    body = s3_client().get_object(Bucket=bucket, Key=blob_key(sha256))["Body"]
    for chunk in body.iter_chunks(MIB):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def blob_keys(bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in (
        s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="blobs/")
    ):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def unfinished_uploads(bucket: str) -> list[str]:
    listing = s3_client().list_multipart_uploads(Bucket=bucket)
    return [upload.get("Key", "?") for upload in listing.get("Uploads", [])]


def blob_versions(files: list[File]) -> dict[str, tuple[str, datetime]]:
    """ETag and time of the blobs present in the gated bucket now, by digest."""
    present = {}
    for f in files:
        try:
            head = s3_client().head_object(Bucket=settings.S3_BUCKET_GATED, Key=blob_key(f.sha256))
        except ClientError:
            continue
        present[f.sha256] = (head["ETag"], head["LastModified"])
    return present


def audit_count(action: str, unlock: Unlock) -> int:
    return AuditEvent.objects.filter(
        action=action, subject_type="unlock", subject_id=str(unlock.pk)
    ).count()


def assert_never_flipped_early(unlock: Unlock, context: str) -> None:
    """Phases first, then the unlock: the flip commits both at once, so a target phase read
    before an unfinished unlock would be a phase that flipped without its bytes."""
    phases = set(Artifact.objects.filter(unlocks=unlock).values_list("phase", flat=True))
    state = Unlock.objects.get(pk=unlock.pk).state
    unverified = UnlockFile.objects.filter(unlock=unlock).exclude(state=UnlockFile.State.VERIFIED)
    if unlock.target_phase in phases:
        assert state == Unlock.State.DONE, f"{context}: phase flipped while the unlock is {state}"
        assert not unverified.exists(), f"{context}: phase flipped before every file verified"
    else:
        assert phases == {Phase.PROPRIETARY}, f"{context}: phases {phases}"


def tick_until(done: Callable[[], bool], *, unlock: Unlock, what: str, context: str) -> None:
    """Play beat: tick every TICK_SECONDS until `done()`, checking at every turn that no phase
    flipped before its bytes."""

    def ticked() -> bool:
        services.unlocks_tick()
        assert_never_flipped_early(unlock, context)
        return done()

    wait_for(ticked, timeout=120, interval=TICK_SECONDS, what=f"{what} ({context})")


def finished(unlock: Unlock) -> bool:
    return Unlock.objects.get(pk=unlock.pk).state in (Unlock.State.DONE, Unlock.State.FAILED)


def assert_published_once_and_verified(
    version: Version, unlock: Unlock, *, context: str, expected_keys: set[str] | None = None
) -> None:
    """Done, every blob streams back with the manifest's digest, no upload left unfinished, one
    Blob row per digest, one audit trail; on a private store (`expected_keys`: all that its
    gated bucket should hold) nothing stray under blobs/ either."""
    unlock.refresh_from_db()
    assert unlock.state == Unlock.State.DONE, f"{context}: {unlock.state} {unlock.reason}"
    assert set(version.artifacts.values_list("phase", flat=True)) == {unlock.target_phase}
    files = list(File.objects.filter(artifact__version=version))
    for f in files:
        assert stored_sha256(settings.S3_BUCKET_GATED, f.sha256) == (f.sha256, f.size), (
            f"{context}: {f.path} does not stream back as sealed"
        )
    rows = UnlockFile.objects.filter(unlock=unlock)
    assert {row.state for row in rows} == {UnlockFile.State.VERIFIED}, context
    assert all(row.bytes_done == row.file.size and not row.error for row in rows), context
    digests = {f.sha256 for f in files}
    assert Blob.objects.filter(bucket=settings.S3_BUCKET_GATED, sha256__in=digests).count() == len(
        digests
    ), context
    uploads = unfinished_uploads(settings.S3_BUCKET_GATED)
    if expected_keys is not None:  # a private store: everything in it is this test's
        assert blob_keys(settings.S3_BUCKET_GATED) == expected_keys, (
            f"{context}: stray or missing objects under blobs/"
        )
    else:  # the shared store: other sessions' uploads may be under way
        uploads = [key for key in uploads if key in {blob_key(sha256) for sha256 in digests}]
    assert uploads == [], f"{context}: multipart uploads left behind"
    assert audit_count("unlock.staging", unlock) == 1, context
    assert audit_count("unlock.done", unlock) == 1, context
    assert audit_count("unlock.failed", unlock) == 0, context
    artifact_ids = [str(pk) for pk in unlock.artifacts.values_list("pk", flat=True)]
    assert AuditEvent.objects.filter(
        action="artifact.phase_changed", subject_type="artifact", subject_id__in=artifact_ids
    ).count() == len(artifact_ids), f"{context}: a phase changed twice"


# --- 1. a transfer worker killed at random points ------------------------------------------------


@dataclass
class Workers:
    """One transfer worker at work at a time, on the private store. A trial kills it and hands
    the queue to a standby started ahead (idle on a queue of its own, so that a worker's few
    seconds of start-up are not part of every trial); the standby is the next trial's victim."""

    env: dict[str, str]
    stack: ExitStack = field(default_factory=ExitStack)
    current: subprocess.Popen[bytes] | None = None
    standby: tuple[str, subprocess.Popen[bytes]] | None = None

    def victim(self) -> subprocess.Popen[bytes]:
        if self.current is None:
            self.current = self.stack.enter_context(celery_worker(env_extra=self.env))
        if self.standby is None:
            name = f"standby-{uuid.uuid4().hex[:8]}"
            process = self.stack.enter_context(
                celery_worker(
                    env_extra=self.env, queue=f"{TEST_QUEUE}-{name}", hostname=f"{name}@faults"
                )
            )
            self.standby = (f"{name}@faults", process)
        return self.current

    def take_over(self) -> None:
        """The standby starts consuming the test queue, as a newly started worker would."""
        assert self.standby is not None
        hostname, process = self.standby
        wait_for(
            lambda: bool(app.control.ping(destination=[hostname], timeout=0.5)),
            timeout=60,
            what="the standby worker to answer",
        )
        answer = app.control.add_consumer(TEST_QUEUE, destination=[hostname], reply=True)
        assert answer, f"{hostname} did not take the queue"
        self.current, self.standby = process, None


@pytest.fixture(scope="class")
def kill_chain(tmp_path_factory, django_db_setup) -> Iterator[tuple[Workers, set[str]]]:
    """The worker chain of the kill trials, on a private store (so that everything in its gated
    bucket is theirs), and the keys the trials published there so far."""
    with private_s3(tmp_path_factory.mktemp("kill-s3")) as store, s3_pointed_at(store):
        workers = Workers(env={**s3_settings_env(), **WORKER_SETTINGS})
        with workers.stack:
            yield workers, set()


@dataclass(frozen=True)
class KillPoint:
    """Where the worker dies: once the pushes report `at` bytes done (progress moves a part at a
    time, so the kill falls just after one, others in flight), once `at` files were verified
    (between two pushes, or before the flip), or `at` seconds after the first push was claimed;
    then `jitter` seconds more."""

    mode: str
    at: float
    jitter: float

    @classmethod
    def draw(cls, rng: random.Random, files: dict[str, bytes]) -> "KillPoint":
        jitter = round(rng.uniform(0, 0.1), 3)
        roll = rng.random()
        if roll < 0.5:
            return cls("bytes", rng.randrange(sum(len(body) for body in files.values())), jitter)
        if roll < 0.8:
            return cls("files", rng.randint(1, len(files)), jitter)
        return cls("delay", round(rng.uniform(0, 1.0), 3), 0.0)

    def __str__(self) -> str:
        where = {
            "bytes": f"after {int(self.at)} bytes done",
            "files": f"after {int(self.at)} files verified",
            "delay": f"{self.at}s after the first claim",
        }[self.mode]
        return f"kill {where} (+{self.jitter}s)"


BIG_FILES = ("big-1.bin", "model-big-2.bin")


def trial_files(rng: random.Random) -> dict[str, bytes]:
    """A small real model (single PUTs) and two multipart files of drawn sizes, pushed in path
    order: big, three small, big, small. Bulk bytes are fresh for every run: blobs are
    content-addressed, and bytes the store already holds would not be pushed at all."""
    files = sample_model_files(shards=2, seed=rng.randrange(1 << 30))
    files[BIG_FILES[0]] = os.urandom(rng.randrange(PART_MIB * MIB + 1, 12 * MIB))
    files[BIG_FILES[1]] = os.urandom(rng.randrange(2 * PART_MIB * MIB, 18 * MIB))
    return files


def stream_some(rng: random.Random, version: Version) -> list[str]:
    """Big files go up by server-side copy, checked against the part digests taken at ingest;
    a file without them (sealed before they existed) is streamed through the worker. Drop them
    for a drawn few, so that the trials kill both kinds of push."""
    streamed = [path for path in BIG_FILES if rng.random() < 0.5]
    FileParts.objects.filter(file__artifact__version=version, file__path__in=streamed).delete()
    return streamed


def ingest_by_workers(*, name: str, files: dict[str, bytes]) -> Version:
    """Stage and ingest through the live worker (`ingest_now` hashes in this process, and would
    race the worker that takes the same tasks)."""
    signing_key_ensure(purpose="models")
    model = services.model_create(actor=None, org="acme", name=name)
    job = services.ingest_start(
        actor=None, model=model, version_name="v1", sources={"base": stage(files)}
    )
    wait_for(
        lambda: IngestJob.objects.get(pk=job.pk).state in ("sealed", "failed"),
        timeout=120,
        what=f"the ingest of {name}",
    )
    job.refresh_from_db()
    assert job.state == IngestJob.State.SEALED, job.error
    assert job.version is not None
    return job.version


def bytes_read(unlock: Unlock) -> int:
    total = UnlockFile.objects.filter(unlock=unlock).aggregate(done=Sum("bytes_done"))["done"]
    return int(total or 0)


def kill_at(worker: subprocess.Popen[bytes], unlock: Unlock, point: KillPoint, context: str) -> str:
    rows = UnlockFile.objects.filter(unlock=unlock)
    condition: Callable[[], bool] = {
        "bytes": lambda: rows.exists() and bytes_read(unlock) >= point.at,
        "files": lambda: rows.filter(state=UnlockFile.State.VERIFIED).count() >= point.at,
        "delay": lambda: rows.exclude(state=UnlockFile.State.PENDING).exists(),
    }[point.mode]
    wait_for(condition, timeout=120, interval=0.005, what=f"the kill point ({context})")
    time.sleep(point.at if point.mode == "delay" else point.jitter)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    states = ", ".join(
        f"{path}={state}:{done}"
        for path, state, done in rows.order_by("pk").values_list(
            "file__path", "state", "bytes_done"
        )
    )
    return f"killed with {bytes_read(unlock)} bytes read, {states}, unlock {unlock_state(unlock)}"


def unlock_state(unlock: Unlock) -> str:
    return Unlock.objects.get(pk=unlock.pk).state


@pytest.mark.parametrize("seed", SEEDS, ids=lambda seed: f"seed={seed}")
class TestATransferWorkerKilledAtARandomPoint:
    """A class so that its trials share one store and worker chain, stopped before the next
    test (whose own worker must be the only one on the queue)."""

    def test_the_publish_completes_verified_and_written_once(
        self, seed, kill_chain, people, short_lease
    ):
        """Kill -9 the worker at a drawn point of the publish; once its lease runs out the tick
        hands its work to the successor. Every file ends verified, written once, and nothing
        partial or stray is left in the store."""
        workers, published = kill_chain
        rng = random.Random(seed)
        files = trial_files(rng)
        point = KillPoint.draw(rng, files)
        context = f"seed={seed}, {point}"
        victim = workers.victim()
        version = ingest_by_workers(name=f"kill-{seed}", files=files)
        context += f", streamed {stream_some(rng, version)}"

        unlock = unlock_approved(version, people)
        context += "; " + kill_at(victim, unlock, point, context)
        assert_never_flipped_early(unlock, context)
        at_kill = {row.file_id: row for row in UnlockFile.objects.filter(unlock=unlock)}
        context += f", uploads left open {len(unfinished_uploads(settings.S3_BUCKET_GATED))}"
        present_at_kill = blob_versions(list(File.objects.filter(artifact__version=version)))
        workers.take_over()
        tick_until(
            lambda: finished(unlock), unlock=unlock, what="the publish to complete", context=context
        )

        files_now = list(File.objects.filter(artifact__version=version))
        published.update(blob_key(f.sha256) for f in files_now)
        assert_published_once_and_verified(
            version, unlock, context=context, expected_keys=published
        )
        for row in UnlockFile.objects.filter(unlock=unlock).select_related("file"):
            if at_kill[row.file_id].state == UnlockFile.State.VERIFIED:
                assert row.attempts == 1, f"{context}: {row.file.path} pushed after verifying"
            else:
                assert row.attempts <= 2, f"{context}: {row.file.path} claimed {row.attempts}x"
        # A blob already in place when the worker died (verified, or completed but not yet
        # recorded) is never uploaded again: same ETag, same time.
        after = blob_versions(files_now)
        for sha256, seen in present_at_kill.items():
            assert after[sha256] == seen, f"{context}: blob {sha256} was written again"


# --- 2. the object store crashing mid-publish ----------------------------------------------------


@pytest.mark.parametrize("push", ["copy", "stream"])
def test_a_store_outage_mid_publish_delays_the_unlock_until_the_store_is_back(
    push, people, short_lease, tmp_path
):
    """Crash the store (SIGKILL) while a multipart push (a server-side copy, or a stream through
    the worker) is under way, and keep it down past the unlock's due time: the unlock waits
    (delayed, never failed, no phase flipped); restarted on the same data, the store gets every
    file, verified, and the unlock flips."""
    due_in = timedelta(seconds=5)
    with private_s3(tmp_path / "s3") as store, s3_pointed_at(store):
        files = sample_model_files(shards=2, seed=random.randrange(1 << 30))
        files["weights.bin"] = os.urandom(8 * PART_MIB * MIB + 12345)  # nine parts
        with celery_worker(env_extra={**s3_settings_env(), **WORKER_SETTINGS}):
            version = ingest_by_workers(name="store-outage", files=files)
            big = version.files.get(path="weights.bin")
            if push == "stream":  # as for a file sealed without part digests
                FileParts.objects.filter(file=big).delete()
            unlock = unlock_approved(version, people, not_before=datetime.now(UTC) + due_in)
            wait_for(
                lambda: UnlockFile.objects.filter(
                    unlock=unlock, file=big, state=UnlockFile.State.PUSHING, bytes_done__gt=0
                ).exists(),
                timeout=120,
                interval=0.005,
                what="the multipart push to start",
            )
            store.crash()
            down_until = max(
                unlock.not_before + timedelta(seconds=1.5), datetime.now(UTC) + timedelta(seconds=3)
            )
            context = "store down"
            tick_until(
                lambda: datetime.now(UTC) > down_until,
                unlock=unlock,
                what="the outage to last past the due time",
                context=context,
            )

            unlock.refresh_from_db()
            assert unlock.state == Unlock.State.STAGING, unlock.reason
            assert UnlockFile.objects.get(unlock=unlock, file=big).state != "verified", (
                "the push finished before the store went down: make weights.bin bigger"
            )
            assert not UnlockFile.objects.filter(
                unlock=unlock, state=UnlockFile.State.FAILED
            ).exists()
            assert audit_count("unlock.delayed", unlock) == 1
            assert audit_count("unlock.failed", unlock) == 0
            assert unlock.delayed_since is not None

            store.start()
            tick_until(
                lambda: finished(unlock),
                unlock=unlock,
                what="the publish to complete after the store came back",
                context="store back",
            )

        assert_published_once_and_verified(
            version,
            unlock,
            context="after a store outage",
            expected_keys={blob_key(f.sha256) for f in version.files.all()},
        )
        assert audit_count("unlock.delayed", unlock) == 1


# --- 3. Redis stopping around a tick -------------------------------------------------------------


def download(client: APIClient, path: str, token: str) -> tuple[int, str, str]:
    response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
    return response.status_code, response.get("Retry-After", ""), response.content.decode()[:300]


def test_a_redis_outage_around_a_tick_holds_the_unlock_and_downloads_answer_503(
    people, short_lease, tmp_path
):
    """Redis (broker and cache) stops while an unlock becomes due and a tick runs: the approval
    and the tick still record their work in PostgreSQL, nothing flips, downloads answer a clear
    503. Once Redis is back (empty: its queue is lost), beat's next ticks fire the due unlock."""
    admin = make_user("root", is_staff=True, is_superuser=True)
    holder = make_user("holder")
    gated = gated_model(actor=admin, name="gated")
    access.access_grant_direct(model=gated, user=holder, reviewer=admin)
    _, token = token_create(user=holder, name="ci")
    commit = gated.versions.get().commit
    downloads = (
        "/api/v1/models/acme/gated/versions/v1/files/base/part-0.bin",
        f"/acme/gated/resolve/{commit}/base/part-0.bin",
    )
    web = APIClient(raise_request_exception=False)
    files = sample_model_files(shards=2, seed=random.randrange(1 << 30))
    scheduler, first, second = people

    with private_redis(tmp_path / "redis") as redis_server, redis_pointed_at(redis_server):
        worker_env = {
            **WORKER_SETTINGS,
            **s3_settings_env(),
            "REDIS_URL": redis_server.url,
            "UNLOCK_TICK_SECONDS": "1",
        }
        beat = ["--beat", "--schedule-filename", str(tmp_path / "beat-schedule")]
        with celery_worker(env_extra=worker_env, args_extra=beat) as worker:
            version = ingest_by_workers(name="redis-outage", files=files)
            unlock = services.unlock_schedule(
                actor=scheduler,
                version=version,
                artifacts=["base"],
                target_phase=Phase.GATED,
                not_before=datetime.now(UTC),
            )
            services.unlock_approve(unlock=unlock, approver=first)
            assert [download(web, path, token)[0] for path in downloads] == [302, 302]

            redis_server.stop()
            # The last approval (which queues the work) and a tick (which claims the unlock
            # and queues its pushes) while the broker is gone.
            services.unlock_approve(unlock=unlock, approver=second)
            services.unlocks_tick()
            refused = [download(web, path, token) for path in downloads]
            # Other users of Redis (the cache) in the web process: the revocation list, and the
            # sign-in throttles of the portal.
            revocations = web.get("/.well-known/weightgate-revocations.jwt")
            sign_in = Client(raise_request_exception=False).post(
                "/accounts/login/", {"login": "holder@example.com", "password": "not this one"}
            )
            time.sleep(LEASE_SECONDS + 1)  # longer than any lease: nothing moves regardless

            assert_never_flipped_early(unlock, "redis down")
            unlock.refresh_from_db()
            assert unlock.state == Unlock.State.STAGING, unlock.reason
            assert audit_count("unlock.delayed", unlock) == 1
            for status, retry_after, body in refused:
                assert (status, retry_after) == (503, "10"), body
            assert revocations.status_code == 503, revocations.content
            assert revocations.json()["error"]["code"] == "unavailable"
            assert sign_in.status_code == 503, sign_in.content[:300]
            assert sign_in.has_header("Retry-After")
            assert worker.poll() is None, "the worker died with Redis"

            redis_server.start()

            def flipped_in_time() -> bool:
                assert_never_flipped_early(unlock, "redis back")
                return finished(unlock)

            wait_for(
                flipped_in_time,
                timeout=120,
                interval=TICK_SECONDS,
                what="beat's ticks to fire the due unlock after Redis came back",
            )
            wait_for(
                lambda: [download(web, path, token)[0] for path in downloads] == [302, 302],
                timeout=30,
                what="downloads to work again",
            )

    assert_published_once_and_verified(version, unlock, context="after a Redis outage")
