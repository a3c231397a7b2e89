"""Verified publishing next to plain boto3 copies of the same bytes, publish throughput with one
and two Celery workers, and the latency of the flip at `not_before`, on the real S3 server.

Run from the project root (`.venv/bin/python bench/publish.py --help`; `--quick` for a smoke run).
It creates a throwaway database next to DATABASE_URL's (the demo data is never touched) and a
Celery queue of its own, then, in a child process whose DATABASE_URL names that database:

(a) stages random safetensors shards, copies them staging -> gated with boto3 several ways (server
    side: copy_object and the managed multipart copy; streaming: get_object into upload_fileobj),
    then publishes the same shards through the real pipeline: ingested through the services (as
    tests/staging.py's ingest_now does), an unlock scheduled for now and approved twice, and real
    `celery -A config worker` processes pushing every file with `release.publishing.blob_push`.
    The publish is timed from the approval that queues `unlock_advance` to the unlock's
    `flipped_at`, and printed as a ratio of the fastest copy, measured a moment before.
(b) publishes fresh shards of the same size with one worker process, then with two.
(c) publishes a small and a large set of shards, then schedules re-releases of the same bytes
    (new versions whose blobs are therefore already verified in place, so pre-staging them is
    bookkeeping only: exactly what a flip sees after a real pre-stage), waits for READY and for
    `not_before`, and times the `unlock_advance` call that flips each one.

Blobs are content-addressed and an existing blob is skipped, so every run uploads new random
bytes and refuses to publish if the gated bucket already holds one of them. At the end it deletes
what it created (its staging and gated keys and the blobs of its random bytes), stops its workers
and drops its database. SeaweedFS frees deleted objects only when it vacuums a volume (`weed mini`
does so every 14 minutes, one volume at a time), and a default run writes some 25 GiB: a few runs
in a row fill the disk and the store then fails every write. So when the store is the local one of
`python -m infra.local`, the run ends by vacuuming the volumes that are mostly garbage
(`--no-vacuum` to skip).

Figures only: nothing here asserts on timings. The exit status is non-zero only when something
failed (an unlock failed, a worker died, a wait timed out, a blob is not where it should be).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    # Run as a script only bench/ is on the path; the project's packages are needed too.
    sys.path.insert(0, str(PROJECT_ROOT))

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from mypy_boto3_s3 import S3Client

    from release.models import File, Model, Version

MiB = 1024 * 1024
ARTIFACT = "weights"
# Seconds between scheduling a flip's unlock and its not_before: enough for the workers to mark
# already-verified files verified and the unlock READY, so that the bench's call does the flip.
FLIP_LEAD = 4.0
POLL = 0.02
# copy_object copies at most 5 GiB in one request (S3's limit).
COPY_OBJECT_MAX = 5 * 1024 * MiB

QUICK: dict[str, Any] = {"size_mib": 72, "shards": 4, "flip_mib": [144, 576], "flip_repeats": 2}
DEFAULTS: dict[str, Any] = {
    "size_mib": 256,
    "shards": 8,
    "flip_mib": [512, 4096],
    "flip_repeats": 3,
}


class BenchFailed(Exception):
    """The pipeline failed: a failure to report, not a figure."""


@dataclass(frozen=True)
class Params:
    run_id: str
    queue: str
    size_mib: int
    shards: int
    workers: int
    flip_mib: list[int]
    flip_repeats: int
    sections: str
    log_dir: str
    vacuum: bool

    @property
    def shard_bytes(self) -> int:
        return self.size_mib * MiB

    def flip_shards(self) -> list[int]:
        return [max(1, math.ceil(mib / self.size_mib)) for mib in self.flip_mib]


# --- Measuring. -------------------------------------------------------------------------------


def _cpu_ticks() -> tuple[int, int] | None:
    """Busy and total jiffies of the whole machine, from /proc/stat (None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    ticks = [int(value) for value in fields]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


def _cores_busy(since: tuple[int, int] | None) -> float | None:
    now = _cpu_ticks()
    if since is None or now is None or now[1] == since[1]:
        return None
    return (now[0] - since[0]) / (now[1] - since[1]) * (os.cpu_count() or 1)


@dataclass
class Measure:
    label: str
    seconds: float
    nbytes: int
    cpu_cores: float | None = None
    kind: str = ""  # "server", "stream" or "publish"

    @property
    def mb_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


@dataclass
class Timeline:
    """Wall-clock times (time.time()) of one unlock's way through the pipeline."""

    started: float
    staging_at: float | None = None
    verified_at: float | None = None  # every file verified, as first seen by polling
    ended_at: float = 0.0  # flipped_at for DONE, else when the awaited state was seen
    state: str = ""


@dataclass
class Publish:
    measure: Measure
    timeline: Timeline
    files: int
    blobs_verified: int
    retried_files: int

    def breakdown(self) -> str:
        t = self.timeline
        parts = []
        if t.staging_at is not None:
            parts.append(f"approval -> staging {t.staging_at - t.started:.2f} s")
            if t.verified_at is not None:
                parts.append(f"pushing {t.verified_at - t.staging_at:.2f} s")
        if t.verified_at is not None:
            parts.append(f"last file verified -> done {max(0.0, t.ended_at - t.verified_at):.2f} s")
        parts.append(f"{self.blobs_verified}/{self.files} blobs verified in place")
        if self.retried_files:
            parts.append(f"{self.retried_files} files needed a retry")
        return ", ".join(parts)


@dataclass
class Flip:
    files: int
    nbytes: int
    seconds: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # called this long after not_before
    prestage: Publish | None = None


# --- Workers. ---------------------------------------------------------------------------------


@dataclass
class Workers:
    processes: list[subprocess.Popen[bytes]]
    names: list[str]
    log: Path

    def check(self) -> None:
        for name, process in zip(self.names, self.processes, strict=True):
            if process.poll() is not None:
                raise self.failed(f"worker {name} exited with status {process.returncode}")

    def failed(self, why: str) -> BenchFailed:
        lines = self.log.read_text(errors="replace").splitlines()[-25:] if self.log.exists() else []
        return BenchFailed("\n    ".join([why, f"worker log {self.log}, last lines:", *lines]))


@contextmanager
def workers_running(count: int, *, params: Params, label: str) -> Iterator[Workers]:
    """`count` separate worker processes, `--concurrency 1` each, consuming only the bench's
    queue, with this process's environment (the bench database); until each answers a ping."""
    from config.celery import app

    log = Path(params.log_dir) / f"workers-{label}.log"
    names = [f"{params.queue}-{label}-{n + 1}@bench" for n in range(count)]
    processes = []
    with log.open("ab") as log_file:
        for name in names:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "config",
                        "worker",
                        "--queues",
                        params.queue,
                        "--concurrency",
                        "1",
                        "--loglevel",
                        "INFO",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "--hostname",
                        name,
                    ],
                    cwd=PROJECT_ROOT,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )
    workers = Workers(processes=processes, names=names, log=log)
    try:
        deadline = time.monotonic() + 60
        waiting = set(names)
        while waiting:
            workers.check()
            if time.monotonic() > deadline:
                raise workers.failed(f"workers {sorted(waiting)} did not answer a ping in 60 s")
            for reply in app.control.ping(destination=sorted(waiting), timeout=0.5):
                waiting -= set(reply)
        yield workers
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- The bench itself: runs in the child process, on the bench database. -----------------------


class PublishBench:
    def __init__(self, params: Params) -> None:
        from django.conf import settings
        from django.contrib.auth.models import User

        from licensing.keys import signing_key_ensure
        from release import services

        self.params = params
        self.staging = settings.S3_BUCKET_STAGING
        self.gated = settings.S3_BUCKET_GATED
        self.prefix = f"bench-publish/{params.run_id}/"
        self.client = _bench_client()
        self.server = (
            self.client.head_bucket(Bucket=self.staging)["ResponseMetadata"]
            .get("HTTPHeaders", {})
            .get("server", "unknown server")
        )
        self.endpoint = settings.S3_ENDPOINT_URL
        _routing_check(params.queue)
        signing_key_ensure(purpose="models")
        self.scheduler: User = User.objects.create_user("bench-scheduler", is_staff=True)
        self.approvers: list[User] = [
            User.objects.create_user(f"bench-approver-{n}", is_staff=True) for n in (1, 2)
        ]
        self.model: Model = services.model_create(actor=None, org="bench", name="publish")
        self.baselines: list[Measure] = []
        self.published: Publish | None = None
        self.by_workers: dict[int, Publish] = {}
        self.flips: list[Flip] = []
        self.staged_seconds = 0.0
        self.staged_bytes = 0
        self.ingest_seconds = 0.0
        self.load_started = os.getloadavg()[0]

    # Staging and ingest.

    def stage(self, name: str, *, count: int) -> str:
        """Upload `count` safetensors shards of new random bytes; their s3:// prefix."""
        import numpy as np
        from safetensors.numpy import save

        rng = np.random.default_rng(secrets.randbits(128))
        prefix = f"{self.prefix}{name}/"
        started = time.perf_counter()
        for index in range(count):
            tensor = np.frombuffer(rng.bytes(self.params.shard_bytes), dtype=np.uint8)
            data = save({"weight": tensor})
            key = f"{prefix}model-{index + 1:05d}-of-{count:05d}.safetensors"
            self.client.upload_fileobj(io.BytesIO(data), self.staging, key)
            self.staged_bytes += len(data)
        self.staged_seconds += time.perf_counter() - started
        return f"s3://{self.staging}/{prefix}"

    def ingest(self, uri: str, *, version_name: str) -> Version:
        """A sealed version of the staged files, hashed here, synchronously, as ingest_now does."""
        from release import services
        from release.models import IngestJob

        started = time.perf_counter()
        job = services.ingest_start(
            actor=None, model=self.model, version_name=version_name, sources={ARTIFACT: uri}
        )
        for file_id in job.files.values_list("pk", flat=True):
            services.ingest_file_hash(file_id=file_id)
        job = services.ingest_finalize(job_id=job.pk)
        self.ingest_seconds += time.perf_counter() - started
        # ingest_start and the last hash queued tasks for workers; done here, they would only
        # find nothing to do, but they must not run inside a timed publish.
        self._queue_purge()
        if job.state != IngestJob.State.SEALED or job.version is None:
            raise BenchFailed(f"ingest of {uri} failed: {job.error}")
        return job.version

    def _queue_purge(self) -> None:
        from config.celery import app

        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(self.params.queue)

    def _staged_keys(self, uri: str) -> list[str]:
        prefix = uri.split("/", 3)[3]
        paginator = self.client.get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=self.staging, Prefix=prefix)
            for item in page.get("Contents", [])
        )

    # (a) Baselines: unverified copies of the same staged bytes with boto3.

    def copy_baselines(self, uri: str) -> None:
        from boto3.s3.transfer import TransferConfig

        keys = self._staged_keys(uri)
        sizes = {
            key: self.client.head_object(Bucket=self.staging, Key=key)["ContentLength"]
            for key in keys
        }
        nbytes = sum(sizes.values())
        default_parts = TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads
        big_parts = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB)

        def copy_object(key: str, target: str) -> None:
            self.client.copy_object(
                Bucket=self.gated, Key=target, CopySource={"Bucket": self.staging, "Key": key}
            )

        def managed_copy(config: TransferConfig) -> Callable[[str, str], None]:
            def copy(key: str, target: str) -> None:
                source = {"Bucket": self.staging, "Key": key}
                self.client.copy(source, self.gated, target, Config=config)  # type: ignore[arg-type]

            return copy

        def stream(key: str, target: str) -> None:
            body = self.client.get_object(Bucket=self.staging, Key=key)["Body"]
            try:
                self.client.upload_fileobj(body, self.gated, target, Config=default_parts)
            finally:
                body.close()

        variants: list[tuple[str, str, str, Callable[[str, str], None]]] = [
            ("server", "copy-object", "copy_object, 1 request per file", copy_object),
            (
                "server",
                "copy-8",
                "managed copy: upload_part_copy, 8 MiB parts",
                managed_copy(default_parts),
            ),
            (
                "server",
                "copy-64",
                "managed copy: upload_part_copy, 64 MiB parts",
                managed_copy(big_parts),
            ),
            ("stream", "stream-8", "get_object -> upload_fileobj, 8 MiB parts", stream),
        ]
        for kind, slug, label, copy in variants:
            if slug == "copy-object" and max(sizes.values()) > COPY_OBJECT_MAX:
                continue
            targets = {key: f"{self.prefix}baseline/{slug}/{key.rsplit('/', 1)[1]}" for key in keys}
            cpu, started = _cpu_ticks(), time.perf_counter()
            for key in keys:
                copy(key, targets[key])
            seconds = time.perf_counter() - started
            measure = Measure(label, seconds, nbytes, _cores_busy(cpu), kind)
            self.baselines.append(measure)
            print(f"  {label:<48} {seconds:7.2f} s {measure.mb_s:8.1f} MB/s", flush=True)
            self._delete(self.gated, list(targets.values()))

    # Publishing through the pipeline.

    def _assert_fresh(self, files: list[File]) -> None:
        from botocore.exceptions import ClientError

        from release.models import blob_key

        for f in files:
            try:
                self.client.head_object(Bucket=self.gated, Key=blob_key(f.sha256))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    continue
                raise
            raise BenchFailed(f"{self.gated} already holds blob {f.sha256}: the bytes are not new")

    def _unlock_start(self, version: Version, *, not_before_in: float) -> tuple[int, float]:
        """Schedule and approve an unlock of the version's artifact to gated; its id and the
        time of the second approval, the one that schedules it and queues unlock_advance."""
        from django.utils import timezone

        from release import services
        from release.models import Phase

        unlock = services.unlock_schedule(
            actor=self.scheduler,
            version=version,
            artifacts=[ARTIFACT],
            target_phase=Phase.GATED,
            not_before=timezone.now() + timedelta(seconds=not_before_in),
        )
        services.unlock_approve(unlock=unlock, approver=self.approvers[0])
        started = time.time()
        services.unlock_approve(unlock=unlock, approver=self.approvers[1])
        return unlock.pk, started

    def unlock_wait(
        self, unlock_id: int, *, started: float, until: set[str], workers: Workers, timeout: float
    ) -> Timeline:
        """Poll the unlock until it reaches a state of `until`; fail on FAILED or CANCELLED,
        a dead worker or the timeout."""
        from django.db.models import Count

        from release.models import Unlock, UnlockFile

        timeline = Timeline(started=started)
        deadline = time.monotonic() + timeout
        waiting = (Unlock.State.AWAITING_APPROVAL, Unlock.State.SCHEDULED)
        while True:
            state, flipped_at, reason = Unlock.objects.values_list(
                "state", "flipped_at", "reason"
            ).get(pk=unlock_id)
            seen = time.time()
            if timeline.staging_at is None and state not in waiting:
                timeline.staging_at = seen
            if timeline.verified_at is None and state not in waiting:
                files = UnlockFile.objects.filter(unlock_id=unlock_id)
                if files.exists() and not files.exclude(state=UnlockFile.State.VERIFIED).exists():
                    timeline.verified_at = seen
            if state in until:
                timeline.state = state
                timeline.ended_at = flipped_at.timestamp() if flipped_at else seen
                return timeline
            if state in (Unlock.State.FAILED, Unlock.State.CANCELLED):
                raise BenchFailed(f"unlock #{unlock_id} {state}: {reason}")
            workers.check()
            if time.monotonic() > deadline:
                files_by_state = dict(
                    UnlockFile.objects.filter(unlock_id=unlock_id)
                    .values_list("state")
                    .annotate(n=Count("pk"))
                    .values_list("state", "n")
                )
                errors = set(
                    UnlockFile.objects.filter(unlock_id=unlock_id)
                    .exclude(error="")
                    .values_list("error", flat=True)
                )
                raise workers.failed(
                    f"unlock #{unlock_id} still {state} after {timeout:.0f} s; files by state "
                    f"{files_by_state}; errors {sorted(errors)[:3]}"
                )
            time.sleep(POLL)

    def publish(self, version: Version, *, label: str, workers: Workers) -> Publish:
        """Publish every file of the version to gated through the workers; timed to DONE."""
        from release.models import Blob, Unlock, UnlockFile
        from release.publishing import blob_present

        files = list(version.files.all())
        nbytes = sum(f.size for f in files)
        self._assert_fresh(files)
        cpu = _cpu_ticks()
        unlock_id, started = self._unlock_start(version, not_before_in=0)
        timeline = self.unlock_wait(
            unlock_id,
            started=started,
            until={Unlock.State.DONE},
            workers=workers,
            timeout=max(180.0, nbytes / 5e6),
        )
        cores = _cores_busy(cpu)
        shas = [f.sha256 for f in files]
        recorded = Blob.objects.filter(bucket=self.gated, sha256__in=shas).count()
        present = sum(blob_present(bucket=self.gated, sha256=f.sha256, size=f.size) for f in files)
        if recorded != len(files) or present != len(files):
            raise BenchFailed(
                f"unlock #{unlock_id} is done but only {recorded} blobs are recorded and "
                f"{present} present of {len(files)}"
            )
        retried = UnlockFile.objects.filter(unlock_id=unlock_id, attempts__gt=1).count()
        result = Publish(
            measure=Measure(label, timeline.ended_at - started, nbytes, cores, "publish"),
            timeline=timeline,
            files=len(files),
            blobs_verified=present,
            retried_files=retried,
        )
        print(
            f"  {label:<48} {result.measure.seconds:7.2f} s {result.measure.mb_s:8.1f} MB/s"
            f"  ({result.breakdown()})",
            flush=True,
        )
        return result

    # (c) Flips.

    def flips_measure(self, version: Version, flip: Flip, *, workers: Workers) -> None:
        """Re-release the version's bytes `flip_repeats` times; time each flip at not_before."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext
        from django.utils import timezone

        from release import services
        from release.models import Unlock
        from release.services.unlocks import unlock_advance

        files = list(version.files.order_by("path"))
        for repeat in range(self.params.flip_repeats):
            again = services.version_create(
                actor=None, model=self.model, name=f"{version.name}-again-{repeat + 1}"
            )
            artifact = services.artifact_create(actor=None, version=again, name=ARTIFACT)
            for f in files:
                services.file_add(
                    artifact=artifact,
                    path=f.path,
                    size=f.size,
                    sha256=f.sha256,
                    storage_key=f.storage_key,
                )
            again = services.version_seal(actor=None, version=again)
            unlock_id, started = self._unlock_start(again, not_before_in=FLIP_LEAD)
            timeline = self.unlock_wait(
                unlock_id,
                started=started,
                until={Unlock.State.READY, Unlock.State.DONE},
                workers=workers,
                timeout=60,
            )
            if timeline.state == Unlock.State.DONE:
                raise BenchFailed(
                    f"unlock #{unlock_id} was READY only after its not_before ({FLIP_LEAD:g} s "
                    "away) and a worker flipped it: raise FLIP_LEAD"
                )
            not_before = Unlock.objects.get(pk=unlock_id).not_before
            time.sleep(max(0.0, (not_before - timezone.now()).total_seconds()))
            late = (timezone.now() - not_before).total_seconds()
            with CaptureQueriesContext(connection) as queries:
                called = time.perf_counter()
                unlock_advance(unlock_id=unlock_id)
                seconds = time.perf_counter() - called
            unlock = Unlock.objects.get(pk=unlock_id)
            if unlock.state != Unlock.State.DONE:
                raise BenchFailed(
                    f"unlock #{unlock_id} is {unlock.state} after the flip: {unlock.reason}"
                )
            flip.seconds.append(seconds)
            flip.queries.append(len(queries))
            flip.late.append(late)
            print(
                f"    flip {repeat + 1}: unlock #{unlock_id} ({flip.files} files) "
                f"{1000 * seconds:.1f} ms, {len(queries)} queries",
                flush=True,
            )

    # Running it all.

    def run(self) -> None:
        p = self.params
        run_bytes = p.shards * p.shard_bytes
        if "a" in p.sections:
            print(f"(a) staging {p.shards} x {p.size_mib} MiB shards", flush=True)
            uri = self.stage("a", count=p.shards)
            version = self.ingest(uri, version_name="a")
            print("(a) unverified boto3 copies, staging -> gated", flush=True)
            self.copy_baselines(uri)
            with workers_running(p.workers, params=p, label="a") as workers:
                self.published = self.publish(
                    version,
                    label=f"verified publish, {p.workers} worker processes",
                    workers=workers,
                )
        if "b" in p.sections:
            for count in (1, 2):
                print(
                    f"(b) staging {p.shards} x {p.size_mib} MiB new shards "
                    f"({run_bytes / MiB:.0f} MiB) for {count} worker process(es)",
                    flush=True,
                )
                version = self.ingest(
                    self.stage(f"b{count}", count=p.shards), version_name=f"b{count}"
                )
                with workers_running(count, params=p, label=f"b{count}") as workers:
                    self.by_workers[count] = self.publish(
                        version,
                        label=f"verified publish, {count} worker process(es)",
                        workers=workers,
                    )
        if "c" in p.sections:
            versions = []
            for mib, shards in zip(p.flip_mib, p.flip_shards(), strict=True):
                print(f"(c) staging {shards} x {p.size_mib} MiB new shards", flush=True)
                name = f"c{mib}"
                versions.append(self.ingest(self.stage(name, count=shards), version_name=name))
            with workers_running(2, params=p, label="c") as workers:
                for version in versions:
                    files = list(version.files.all())
                    flip = Flip(files=len(files), nbytes=sum(f.size for f in files))
                    flip.prestage = self.publish(
                        version,
                        label=f"first release of {_size(flip.nbytes)}, 2 worker processes",
                        workers=workers,
                    )
                    self.flips.append(flip)
                    self.flips_measure(version, flip, workers=workers)

    def cleanup(self) -> None:
        """Delete what this run created: its keys under the bench prefix, and the gated blobs of
        its random bytes (nobody else can hold those)."""
        from release.models import File, blob_key

        deleted = 0
        try:
            for bucket in (self.staging, self.gated):
                paginator = self.client.get_paginator("list_objects_v2")
                keys = [
                    item["Key"]
                    for page in paginator.paginate(Bucket=bucket, Prefix=self.prefix)
                    for item in page.get("Contents", [])
                ]
                deleted += self._delete(bucket, keys)
            blobs = [blob_key(sha) for sha in set(File.objects.values_list("sha256", flat=True))]
            deleted += self._delete(self.gated, blobs)
            for bucket, prefixes in (
                (self.staging, [self.prefix]),
                (self.gated, [self.prefix, *blobs]),
            ):
                for prefix in prefixes:
                    self._abort_uploads(bucket, prefix)
        except Exception as error:  # report, and let the rest of the teardown run
            print(f"cleanup incomplete ({deleted} objects deleted): {error}", file=sys.stderr)
            return
        print(f"cleanup: deleted the run's {deleted} objects", flush=True)
        if self.params.vacuum:
            self._vacuum()

    def _vacuum(self) -> None:
        """Reclaim the space of deleted objects now, if the store is the local SeaweedFS."""
        from infra.local import HOST, WEED_PORTS

        if self.endpoint.rstrip("/") != f"http://{HOST}:{WEED_PORTS['s3.port']}":
            return
        master = f"http://{HOST}:{WEED_PORTS['master.port']}"
        started = time.perf_counter()
        try:
            # The filer deletes an object's chunks in the background: vacuuming right after the
            # deletes finds little garbage yet. Wait until the volumes' garbage stops growing.
            garbage, deadline = -1, time.monotonic() + 60
            while time.monotonic() < deadline:
                now = _seaweed_garbage(master)
                if now == garbage:
                    break
                garbage = now
                time.sleep(2)
            answer = urllib.request.urlopen(  # noqa: S310 - fixed loopback URL of the local master
                f"{master}/vol/vacuum?garbageThreshold=0.5", timeout=600
            )
            with answer:
                answer.read()
            left = _seaweed_garbage(master)
        except (OSError, ValueError) as error:
            print(f"vacuum of the local SeaweedFS failed: {error}", file=sys.stderr)
            return
        print(
            f"cleanup: vacuumed the local SeaweedFS, {garbage / 2**30:.1f} GiB of deleted data "
            f"before, {left / 2**30:.1f} GiB after ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    def _delete(self, bucket: str, keys: list[str]) -> int:
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
            )
        return len(keys)

    def _abort_uploads(self, bucket: str, prefix: str) -> None:
        answer = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        for upload in answer.get("Uploads", []):
            self.client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )

    # Reporting.

    def report(self) -> None:
        p = self.params
        print()
        print("Weightgate verified publish, next to plain boto3 copies of the same bytes")
        print(f"  store    {self.server} at {self.endpoint}, {self.staging} -> {self.gated}")
        if "a" in p.sections or "b" in p.sections:
            print(
                f"  data     {p.shards} x {p.size_mib} MiB safetensors shards "
                f"({_size(p.shards * p.shard_bytes)}) per publish in (a) and (b); new random "
                "bytes for every publish"
            )
        print(
            "  workers  separate `celery -A config worker --concurrency 1` processes (prefork, "
            f"one child each), on queue {p.queue} only"
        )
        print(
            "  publish  timed from the approval that queues unlock_advance to the unlock's "
            "flipped_at (DONE); MB = 10^6 bytes; cpu = cores busy, whole machine"
        )
        if self.staged_seconds:
            staging = self.staged_bytes / self.staged_seconds / 1e6
            ingest = self.staged_bytes / max(self.ingest_seconds, 1e-9) / 1e6
            print(
                f"  setup    staging uploads {staging:.0f} MB/s; synchronous ingest "
                f"(hash + header checks, in this process) {ingest:.0f} MB/s"
            )
        print(
            f"  machine  {os.cpu_count()} CPUs, {platform.platform(terse=True)}, "
            f"Python {platform.python_version()}; load average (1 min) {self.load_started:.1f} "
            f"at the start, {os.getloadavg()[0]:.1f} at the end"
        )
        if self.published and self.baselines:
            self._report_publish(self.published)
        if self.by_workers:
            self._report_workers()
        if self.flips:
            self._report_flips()

    def _report_publish(self, published: Publish) -> None:
        baseline = min(self.baselines, key=lambda m: m.seconds)
        streaming = [m for m in self.baselines if m.kind == "stream"]
        print()
        print("(a) verified publish vs the fastest unverified boto3 copy of the same bytes")
        header = f"{'what':<58}{'seconds':>9}{'MB/s':>9}{'cpu':>6}{'vs fastest':>12}"
        print(header)
        print("-" * len(header))
        for m in [*self.baselines, published.measure]:
            kind = {"server": "server-side ", "stream": "streaming ", "publish": ""}[m.kind]
            mark = "  <- baseline" if m is baseline else ""
            print(
                f"{kind + m.label:<58}{m.seconds:>9.2f}{m.mb_s:>9.1f}{_cores(m.cpu_cores):>6}"
                f"{m.seconds / baseline.seconds:>11.2f}x{mark}"
            )
        ratio = published.measure.seconds / baseline.seconds
        print(
            f"goal <= 1.25x the fastest copy, every byte verified: "
            f"{'met' if ratio <= 1.25 else 'not met'} ({ratio:.2f}x)"
        )
        if streaming:
            fastest_stream = min(streaming, key=lambda m: m.seconds)
            print(
                f"vs the streaming copy (the same get+put data path, unverified): "
                f"{published.measure.seconds / fastest_stream.seconds:.2f}x"
            )
        print(f"publish: {published.breakdown()}")

    def _report_workers(self) -> None:
        print()
        print(
            "(b) publish throughput by worker processes (each --concurrency 1), "
            f"{_size(self.params.shards * self.params.shard_bytes)} of new bytes each"
        )
        header = (
            f"{'workers':<10}{'files':>7}{'seconds':>9}{'MB/s':>9}{'cpu':>6}{'vs 1 worker':>13}"
        )
        print(header)
        print("-" * len(header))
        one = self.by_workers.get(1)
        for count, result in sorted(self.by_workers.items()):
            m = result.measure
            ratio = f"{m.mb_s / one.measure.mb_s:.2f}x" if one else "-"
            print(
                f"{count:<10}{result.files:>7}{m.seconds:>9.2f}{m.mb_s:>9.1f}"
                f"{_cores(m.cpu_cores):>6}{ratio:>13}"
            )
        for count, result in sorted(self.by_workers.items()):
            print(f"{count} worker(s): {result.breakdown()}")

    def _report_flips(self) -> None:
        print()
        print(
            "(c) flip latency at not_before: the unlock_advance call that flips a READY unlock "
            f"(re-releases of pre-staged bytes, {self.params.flip_repeats} unlocks each)"
        )
        header = (
            f"{'unlock':<10}{'files':>7}{'median ms':>11}{'min ms':>9}{'max ms':>9}"
            f"{'queries':>9}{'called late ms':>16}{'first release MB/s':>20}"
        )
        print(header)
        print("-" * len(header))
        for flip in self.flips:
            prestage = f"{flip.prestage.measure.mb_s:.1f}" if flip.prestage else "-"
            print(
                f"{_size(flip.nbytes):<10}{flip.files:>7}"
                f"{1000 * statistics.median(flip.seconds):>11.1f}"
                f"{1000 * min(flip.seconds):>9.1f}{1000 * max(flip.seconds):>9.1f}"
                f"{'/'.join(str(q) for q in sorted(set(flip.queries))):>9}"
                f"{1000 * statistics.median(flip.late):>16.1f}{prestage:>20}"
            )
        if len(self.flips) == 2 and all(f.seconds for f in self.flips):
            small, large = (statistics.median(f.seconds) for f in self.flips)
            worst = max(max(f.seconds) for f in self.flips)
            growth = self.flips[1].nbytes / self.flips[0].nbytes
            print(
                f"large / small median: {large / small:.2f}x for {growth:.0f}x the bytes; "
                f"goal under 1 s: {'met' if worst < 1 else 'not met'} "
                f"(slowest flip {1000 * worst:.1f} ms)"
            )


def _size(nbytes: int) -> str:
    return f"{nbytes / (1024 * MiB):.1f} GiB" if nbytes >= 1024 * MiB else f"{nbytes / MiB:.0f} MiB"


def _cores(cores: float | None) -> str:
    return "-" if cores is None else f"{cores:.1f}"


def _seaweed_garbage(master: str) -> int:
    """Bytes of deleted objects still held in the volumes, from the SeaweedFS master."""
    answer = urllib.request.urlopen(f"{master}/vol/status", timeout=10)  # noqa: S310 - as above
    with answer:
        status = json.load(answer)

    def volumes(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if "DeletedByteCount" in node and "Id" in node:
                yield node
            for value in node.values():
                yield from volumes(value)
        elif isinstance(node, list):
            for value in node:
                yield from volumes(value)

    return sum(int(volume["DeletedByteCount"]) for volume in volumes(status))


def _bench_client() -> S3Client:
    """The project's S3 client settings with a connection pool big enough for boto3's managed
    transfers (10 threads), so that no baseline loses time reopening connections."""
    import boto3
    from botocore.config import Config
    from django.conf import settings

    from release.storage import s3_client

    return boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        region_name=settings.S3_REGION,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY,
        config=s3_client().meta.config.merge(Config(max_pool_connections=32)),
    )


def _routing_check(queue: str) -> None:
    """Every task this process sends must go to the bench's queue. The child process gets
    CELERY_TASK_DEFAULT_QUEUE and CELERY_TRANSFER_QUEUE in its environment, so the settings
    route there from the start (tests/celery_worker.py re-routes an already configured app
    instead); this checks it, since a stray push would reach another worker on the machine."""
    from config.celery import app

    for task in (
        "release.tasks.unlock_advance",
        "release.tasks.unlock_push_file",
        "release.tasks.ingest_hash_file",
        "release.tasks.ingest_finalize",
    ):
        routed = app.amqp.router.route({}, task)["queue"].name
        if routed != queue:
            raise BenchFailed(f"{task} would go to queue {routed!r}, not the bench's {queue!r}")


def driver_main(params_json: str) -> int:
    """Entry point of the child process, whose environment names the bench database and
    queue: measures, cleans up, reports."""
    import django

    django.setup()
    params = Params(**json.loads(params_json))
    bench = PublishBench(params)
    status = 0
    try:
        bench.run()
    except BenchFailed as failure:
        print(f"bench failed: {failure}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        status = 130
    finally:
        bench.cleanup()
        bench.report()  # what was measured, also when something failed part way
    return status


# --- The parent process: the bench database, and the child that uses it. ----------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mib", type=int, help=f"MiB per shard (default {DEFAULTS['size_mib']})"
    )
    parser.add_argument(
        "--shards",
        type=int,
        help=f"shards per publish in (a) and (b) (default {DEFAULTS['shards']})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes for the publish in (a) (default 2)",
    )
    parser.add_argument(
        "--flip-mib",
        type=int,
        nargs=2,
        metavar=("SMALL", "LARGE"),
        help="MiB of the small and large unlocks in (c) (default 512 4096)",
    )
    parser.add_argument(
        "--flip-repeats",
        type=int,
        help=f"flips timed per size in (c) (default {DEFAULTS['flip_repeats']})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run to check the bench works: "
        + ", ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in QUICK.items()
        ),
    )
    parser.add_argument(
        "--sections", default="abc", help="which of the parts a, b, c to run (default abc)"
    )
    parser.add_argument(
        "--no-vacuum",
        action="store_true",
        help="do not vacuum the local SeaweedFS at the end (it frees deleted objects only then)",
    )
    parser.add_argument(
        "--database",
        help="throwaway database, dropped and created (default weightgate_bench_publish_<run id>)",
    )
    args = parser.parse_args(argv)
    chosen = QUICK if args.quick else DEFAULTS
    values = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in chosen.items()}
    if min(values["size_mib"], values["shards"], values["flip_repeats"], args.workers) < 1:
        parser.error("--size-mib, --shards, --flip-repeats and --workers must be positive")
    if min(values["flip_mib"]) < 1 or not set(args.sections) <= set("abc"):
        parser.error("--flip-mib must be positive and --sections made of a, b and c")

    from bench.catalog_api import bench_database, migrate_and_drive
    from config.settings import env_str  # also reads .local/env, like every other entry point

    run_id = uuid.uuid4().hex[:8]
    database = args.database or f"weightgate_bench_publish_{run_id}"
    with (
        tempfile.TemporaryDirectory(prefix="weightgate-bench-publish-") as scratch,
        bench_database(env_str("DATABASE_URL"), database) as database_url,
    ):
        params = Params(
            run_id=run_id,
            queue=f"bench-publish-{run_id}",
            workers=args.workers,
            sections=args.sections,
            log_dir=scratch,
            vacuum=not args.no_vacuum,
            **values,
        )
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            # Everything the child sends, and everything its workers take, goes through this
            # queue only: no other worker on the machine (the demo's, say) sees the bench's work.
            "CELERY_TASK_DEFAULT_QUEUE": params.queue,
            "CELERY_TRANSFER_QUEUE": params.queue,
        }
        return migrate_and_drive(env, database, "bench.publish", json.dumps(asdict(params)))


if __name__ == "__main__":
    sys.exit(main())
