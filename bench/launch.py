"""Launch day under load: token holders resolving downloads, new users requesting access, and an
unlock flipping a second artifact from proprietary to gated in the middle of it all.

Run from the project root (`make load`, or `.venv/bin/python bench/launch.py --help`; `--quick`
for a smoke run). It creates a throwaway database next to DATABASE_URL's and takes an empty
Redis database of REDIS_URL's server (the demo data is never touched), migrates, then, in a
child process whose DATABASE_URL and REDIS_URL name those:

- seeds bench/downloads.py's gated model (version v1, --files files as rows) with --holders grant
  holders, each with a token; switches its gate to automatic approval with a form (country,
  required checkbox) and makes one user with a signed-in session per access request to come
  (bench/licensing.py's); stages --unlock-shards random safetensors shards in the staging bucket
  and ingests them as version v2, whose one artifact stays proprietary;
- starts a real Celery worker with beat (the unlock tick every second) on a queue of its own and
  gunicorn as configured in infra/gunicorn.conf.py, both on loopback;
- schedules an unlock of v2 to gated due --flip-at seconds into the load, approved by two staff
  who did not schedule it --prestage-seconds before the load (the worker pushes and verifies its
  files ahead, as on a real launch; beat's tick flips it when due), and loads the server from a
  separate asyncio process for --duration seconds: --connections token holders, three in four
  sending Hub `HEAD /{org}/{name}/resolve/{commit}/{path}` and one in four REST
  `GET .../files/{path}` with `Prefer: no-redirect`, every other request for a file of the
  unlocking artifact; and --access-connections more POSTing access requests at up to
  --access-rate a second, each a different user's session with its CSRF token.

Every answer is kept with its time. The report gives requests per second, p50/p99 latency and
errors per kind of traffic, and when the flip committed. Checked (the exit status is non-zero if
not): no client got the unlocking artifact (302, or 200 with a URL) before the flip committed,
while before it they got the refusal a grant holder gets for a proprietary artifact (404, as for
what does not exist); the flip committed during the load and became visible; no answer was a
5xx, a transport error or another unexpected status; every access request answered 201 left an
approved request and a grant that verifies with the server's JWKS. Nothing asserts on timings.

At the end it stops the worker and gunicorn, deletes the staged objects and the blobs the unlock
pushed, empties its Redis database and drops its database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on the path, and bench/licensing.py would shadow the app.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PROJECT_ROOT / "bench"]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from bench.catalog_api import (  # noqa: E402
    CONNECT_SPACING,
    HOST,
    TRANSPORT_ERRORS,
    Connection,
    Server,
    ServerFailed,
    bench_database,
    gunicorn_running,
    migrate_and_drive,
    percentile_ms,
    request_bytes,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from bench.downloads import Seeded
    from release.models import Version

UNLOCK_VERSION = "v2"
QUICK: dict[str, Any] = {
    "duration": 15.0,
    "prestage_seconds": 10.0,
    "unlock_shards": 4,
    "unlock_shard_kib": 1024,
}
DEFAULTS: dict[str, Any] = {
    "duration": 60.0,
    "prestage_seconds": 15.0,
    "unlock_shards": 8,
    "unlock_shard_kib": 8192,
}
WORKER_READY_SECONDS = 120  # a busy machine can take long to start a worker; not a measurement
POLL_INTERVAL = 0.1
# At the end no new request is sent, and those in flight get this long for their answer (more
# than gunicorn's worker timeout): every request sent is accounted for.
DRAIN_SECONDS = 90.0
SAMPLES = 5  # error samples kept per kind

# The kinds of traffic, as reported.
RESOLVE, FILE, ACCESS = "resolve", "file", "access"
KIND_TITLES = {
    RESOLVE: "Hub resolve (HEAD, 302)",
    FILE: "REST file (GET no-redirect, 200)",
    ACCESS: "access request (POST, 201)",
}
# What a download of a released file answers, per kind.
GRANTED = {RESOLVE: 302, FILE: 200}
# What a grant holder gets for a file of a proprietary artifact: it does not exist for them
# (release.selectors.file_download_decision).
REFUSED = 404


@dataclass(frozen=True)
class Params:
    run_id: str
    database: str
    redis_db: int
    queue: str
    duration: float
    flip_at: float
    prestage_seconds: float
    connections: int
    access_connections: int
    access_rate: float
    workers: int
    celery_concurrency: int
    files: int
    holders: int
    unlock_shards: int
    unlock_shard_kib: int
    scratch: str

    @property
    def prefix(self) -> str:
        return f"bench-launch/{self.run_id}/"

    @property
    def access_users(self) -> int:
        """Users with a session, one per access request the load may send."""
        return math.ceil(self.access_rate * self.duration) + 1


# --- The load: runs in a separate process. ----------------------------------------------------


@dataclass
class Client:
    kind: str
    head: bool
    requests: list[tuple[bytes, bool]]  # (request, whether for the unlocking artifact), in turn


@dataclass
class LoadPlan:
    port: int
    start_at: float  # wall clock
    duration: float
    downloads: list[Client]
    access: list[bytes]  # one per user, each sent once
    access_connections: int
    access_rate: float


# One answer: kind, for the unlocking artifact, sent (seconds after the start of the load),
# latency (seconds), status (0: no answer).
Answer = tuple[str, bool, float, float, int]


@dataclass
class LoadRecords:
    started: float  # wall clock at the start of the load
    seconds: float
    answers: list[Answer] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=dict)
    connects: int = 0
    cpu_seconds: float = 0.0
    access_left: int = 0  # access requests not sent when the load ended


class _Load:
    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.answers: list[Answer] = []
        self.samples: dict[str, list[str]] = {}
        self.connections: list[Connection] = []
        self.waiting = deque(plan.access)
        self.access_sent = 0
        self.t0 = 0.0
        self.stopping = False

    def sample(self, kind: str, what: str) -> None:
        kept = self.samples.setdefault(kind, [])
        if len(kept) < SAMPLES:
            kept.append(what)

    async def _exchange(self, connection: Connection, kind: str, new: bool, request: bytes) -> None:
        sent = time.perf_counter()
        try:
            status, body = await connection.exchange(request, head=kind == RESOLVE)
        except TRANSPORT_ERRORS as error:
            self.answers.append((kind, new, sent - self.t0, time.perf_counter() - sent, 0))
            self.sample(kind, f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.05)
            return
        self.answers.append((kind, new, sent - self.t0, time.perf_counter() - sent, status))
        if status not in (GRANTED.get(kind, 201), REFUSED) or (status == REFUSED and not new):
            self.sample(kind, f"HTTP {status}: {body[:200].decode(errors='replace')}")

    async def download(self, client: Client) -> None:
        """One token holder's keep-alive connection: its requests in turn, without pause."""
        connection = Connection(self.plan.port)
        self.connections.append(connection)
        turn = 0
        try:
            while not self.stopping:
                request, new = client.requests[turn % len(client.requests)]
                turn += 1
                await self._exchange(connection, client.kind, new, request)
        finally:
            connection.close()

    async def access(self) -> None:
        """New users' access requests on one keep-alive connection, each sent once, request n
        not before n / access_rate seconds into the load (all connections together)."""
        connection = Connection(self.plan.port)
        self.connections.append(connection)
        try:
            while self.waiting:
                due = self.t0 + self.access_sent / self.plan.access_rate
                self.access_sent += 1
                request = self.waiting.popleft()
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if self.stopping:
                    self.waiting.appendleft(request)
                    return
                await self._exchange(connection, ACCESS, False, request)
        finally:
            connection.close()

    async def run(self) -> LoadRecords:
        await asyncio.sleep(max(0.0, self.plan.start_at - time.time()))
        self.t0, started = time.perf_counter(), time.time()
        cpu_started = time.process_time()
        tasks = []
        clients = [self.download(client) for client in self.plan.downloads]
        clients += [self.access() for _ in range(self.plan.access_connections)]
        for client in clients:
            tasks.append(asyncio.create_task(client))
            # A burst of connections would all land on whichever worker wakes first (see
            # bench/catalog_api.py): a few milliseconds apart, every worker takes its share.
            await asyncio.sleep(CONNECT_SPACING)
        await asyncio.sleep(max(0.0, self.t0 + self.plan.duration - time.perf_counter()))
        self.stopping = True
        seconds = time.perf_counter() - self.t0
        _, late = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in late:
            task.cancel()
            self.answers.append(("client", False, seconds, DRAIN_SECONDS, 0))
            self.sample("client", f"no answer {DRAIN_SECONDS:g} s after the end of the load")
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                self.sample("client", f"client crashed: {type(outcome).__name__}: {outcome}")
        return LoadRecords(
            started=started,
            seconds=seconds,
            answers=self.answers,
            samples=self.samples,
            connects=sum(c.connects for c in self.connections),
            cpu_seconds=time.process_time() - cpu_started,
            access_left=len(self.waiting),
        )


def launch_load(plan: LoadPlan) -> LoadRecords:
    """The whole load, from `plan.start_at` (wall clock) for `plan.duration` seconds."""
    return asyncio.run(_Load(plan).run())


def ready() -> bool:
    """Called once before the load, so that the load process has imported everything."""
    return True


# --- A Celery worker with beat, on the bench's database, Redis database and queue. -------------


@contextmanager
def celery_worker_running(
    env: dict[str, str], *, queue: str, concurrency: int, scratch: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery worker --beat` consuming only `queue` (as tests/celery_worker.py starts one for
    the tests), its log and beat's schedule file in `scratch`; stopped on the way out."""
    log = (scratch / "celery.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--beat",
            "--schedule",
            str(scratch / "celerybeat-schedule"),
            "--queues",
            queue,
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            f"{queue}@%h",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()  # a warm shutdown: running tasks finish first
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class BenchFailed(Exception):
    """Something failed: a failure to report, not a figure."""


def _log_tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log, the message alone of the JSON ones."""
    tail = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
            line = f"{entry['time'][11:23]} {entry['level']} {entry['message']}"
        except (ValueError, KeyError, TypeError):
            pass
        if line.strip():
            tail.append(line[:200])
    return "\n    ".join([f"{path.name}, last lines:", *tail[-lines:]])


def worker_wait(worker: subprocess.Popen[bytes], scratch: Path) -> float:
    """Queue a heartbeat and wait until the worker has recorded it: broker, worker and database
    all work. The seconds it took."""
    from release.models import Heartbeat
    from release.tasks import heartbeat

    started = time.perf_counter()
    heartbeat.delay()
    while not Heartbeat.objects.exists():
        if worker.poll() is not None:
            raise BenchFailed(
                f"the Celery worker exited ({worker.returncode}); "
                + _log_tail(scratch / "celery.log")
            )
        if time.perf_counter() - started > WORKER_READY_SECONDS:
            raise BenchFailed(
                f"the Celery worker ran no task within {WORKER_READY_SECONDS} s; "
                + _log_tail(scratch / "celery.log")
            )
        time.sleep(0.2)
    return time.perf_counter() - started


# --- Seeding: in the driver process, on the bench database. ------------------------------------


@dataclass
class Launch:
    seeded: Seeded
    version: Version  # v2, whose artifact unlocks
    new_paths: list[str]
    access_users: list[User]
    sessions: list[str]
    approvers: list[User]
    staged_seconds: float
    staged_bytes: int


def seed(params: Params) -> Launch:
    from django.conf import settings

    from bench import downloads
    from bench.licensing import FORM_FIELDS, users_with_sessions
    from licensing.access import gate_policy_set
    from licensing.models import GatePolicy
    from release.models import Phase
    from tests.factories import make_user

    seeded = downloads.seed(files=params.files, holders=params.holders, prefix=params.prefix)
    gate_policy_set(
        actor=seeded.admin,
        model=seeded.model,
        license=seeded.license,
        approval_mode=GatePolicy.Mode.AUTO,
        form_fields=FORM_FIELDS,
    )
    users, sessions = users_with_sessions(params.access_users + 1, prefix="bench-launch")
    prefix = f"{params.prefix}unlock/"
    staged = downloads.shards_stage(
        prefix=prefix, shards=params.unlock_shards, shard_bytes=params.unlock_shard_kib * 1024
    )
    version = downloads.version_ingest(
        actor=seeded.admin,
        model=seeded.model,
        version_name=UNLOCK_VERSION,
        sources={downloads.ARTIFACT: f"s3://{settings.S3_BUCKET_STAGING}/{prefix}"},
    )
    artifact = version.artifacts.get(name=downloads.ARTIFACT)
    if artifact.phase != Phase.PROPRIETARY:
        raise BenchFailed(f"{artifact} is {artifact.phase} after ingest, not proprietary")
    files = list(version.files.order_by("path"))
    approvers = [make_user(f"bench-approver-{n}", is_staff=True) for n in (1, 2)]
    return Launch(
        seeded=seeded,
        version=version,
        new_paths=[f.path for f in files],
        access_users=users,
        sessions=sessions,
        approvers=approvers,
        staged_seconds=staged,
        staged_bytes=sum(f.size for f in files),
    )


def _resolve_path(version: Version, path: str) -> str:
    model = version.model
    return f"/{model.org}/{model.name}/resolve/{version.commit}/{path}"


def _file_path(version: Version, path: str) -> str:
    model = version.model
    return f"/api/v1/models/{model.org}/{model.name}/versions/{version.name}/files/{path}"


def load_plan(launch: Launch, params: Params, port: int, start_at: float) -> LoadPlan:
    """Connection i: token i mod holders; every fourth connection REST, the others the Hub;
    requests alternate between the v1 files (from file i on) and the unlocking v2 files."""
    from bench.licensing import access_request_bytes, requests_path

    seeded = launch.seeded
    old, new = seeded.version, launch.version
    clients = []
    for index in range(params.connections):
        kind = FILE if index % 4 == 3 else RESOLVE
        where = _file_path if kind == FILE else _resolve_path
        headers = {"Authorization": f"Bearer {seeded.tokens[index % len(seeded.tokens)]}"}
        if kind == FILE:
            headers["Prefer"] = "no-redirect"
        method = "HEAD" if kind == RESOLVE else "GET"
        requests = []
        for turn in range(2 * max(len(seeded.paths), len(launch.new_paths))):
            version, paths = (old, seeded.paths) if turn % 2 == 0 else (new, launch.new_paths)
            path = paths[(index + turn // 2) % len(paths)]
            request = request_bytes(port, where(version, path), method=method, headers=headers)
            requests.append((request, version is new))
        clients.append(Client(kind, kind == RESOLVE, requests))
    model = seeded.model
    access = access_request_bytes(
        port=port,
        path=requests_path(model.name, model.org),
        license_sha256=seeded.license.text_sha256,
        sessions=launch.sessions,
        users=range(params.access_users),
    )
    return LoadPlan(
        port=port,
        start_at=start_at,
        duration=params.duration,
        downloads=clients,
        access=access,
        access_connections=params.access_connections,
        access_rate=params.access_rate,
    )


def server_check(server: Server, launch: Launch) -> None:
    """Before any load, one request of each: what they must answer before the flip. The last
    user (not in the load) requests access."""
    from bench.downloads import http_request
    from bench.licensing import access_request_bytes, requests_path

    seeded = launch.seeded
    token = {"Authorization": f"Bearer {seeded.tokens[0]}"}
    checks = [
        ("HEAD", _resolve_path(seeded.version, seeded.paths[0]), token, GRANTED[RESOLVE]),
        ("GET", _file_path(seeded.version, seeded.paths[0]), token, 302),
        ("HEAD", _resolve_path(launch.version, launch.new_paths[0]), token, REFUSED),
        ("GET", _file_path(launch.version, launch.new_paths[0]), token, REFUSED),
    ]
    for method, path, headers, expected in checks:
        status, body, _ = http_request(server.port, method, path, headers)
        if status != expected:
            raise server.failed(f"{method} {path} answered {status}, not {expected}: {body!r}")
    spare = len(launch.access_users) - 1
    request = access_request_bytes(
        port=server.port,
        path=requests_path(seeded.model.name, seeded.model.org),
        license_sha256=seeded.license.text_sha256,
        sessions=launch.sessions,
        users=[spare],
    )[0]
    status, body = asyncio.run(_one(server.port, request))
    if status != 201:
        raise server.failed(f"an access request answered {status}, not 201: {body[:300]!r}")


async def _one(port: int, request: bytes) -> tuple[int, bytes]:
    connection = Connection(port)
    try:
        return await connection.exchange(request)
    finally:
        connection.close()


# --- The run. -----------------------------------------------------------------------------------


@dataclass
class Timeline:
    """Wall clock times, from the driver: when each unlock state was first seen."""

    approved: float = 0.0
    staging: float | None = None  # the worker claimed it and queued the pushes
    seen: dict[str, float] = field(default_factory=dict)
    not_before: float = 0.0
    # The flip's last write, its `unlock.done` audit event: stamped inside the flip's transaction
    # once it holds the audit chain's lock, moments before the commit. A lower bound of the
    # commit (no one can see the new phase before it), and the driver's first sight of the
    # unlock done an upper bound.
    committed: float | None = None
    state: str = ""
    reason: str = ""


@dataclass
class Cpu:
    gunicorn: float | None = None
    celery: float | None = None
    postgres: float | None = None
    cores_busy: float | None = None


@dataclass
class Results:
    load_started: float = field(default_factory=lambda: os.getloadavg()[0])
    load_ended: float = 0.0
    seed_seconds: float = 0.0
    worker_seconds: float = 0.0
    staged_seconds: float = 0.0
    staged_bytes: int = 0
    new_files: int = 0
    access_users: int = 0
    records: LoadRecords | None = None
    timeline: Timeline = field(default_factory=Timeline)
    cpu: Cpu = field(default_factory=Cpu)
    approved: int = 0
    grants: int = 0
    verified: int = 0
    failures: list[str] = field(default_factory=list)
    cleaned: str = ""


def _cpu_of(pids: list[int]) -> float | None:
    from bench.licensing import process_cpu

    values = [process_cpu(pid) for pid in pids]
    return sum(v for v in values if v is not None) if values and None not in values else None


def _family(pid: int) -> list[int]:
    from bench.licensing import children

    return [pid, *children(pid)]


def run(params: Params, results: Results, launch_holder: list[Launch]) -> None:
    import multiprocessing
    from datetime import UTC, datetime

    from bench.downloads import ARTIFACT
    from bench.licensing import Sampler, children, cores_busy, machine_ticks
    from licensing.models import AuditEvent
    from release import services
    from release.models import Phase, Unlock

    started = time.perf_counter()
    launch = seed(params)
    launch_holder.append(launch)
    results.seed_seconds = time.perf_counter() - started
    results.staged_seconds, results.staged_bytes = launch.staged_seconds, launch.staged_bytes
    results.new_files, results.access_users = len(launch.new_paths), len(launch.access_users) - 1
    print(
        f"seeded in {results.seed_seconds:.1f} s: {params.files} gated files (rows), "
        f"{params.holders} holders, {results.access_users} users with sessions, "
        f"{len(launch.new_paths)} staged files of the unlocking artifact",
        flush=True,
    )
    scratch = Path(params.scratch)
    env = dict(os.environ)
    spawn = multiprocessing.get_context("spawn")
    with (
        celery_worker_running(
            env, queue=params.queue, concurrency=params.celery_concurrency, scratch=scratch
        ) as worker,
        gunicorn_running(env, params.workers, scratch / "gunicorn.log") as server,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as load_process,
    ):
        results.worker_seconds = worker_wait(worker, scratch)
        print(
            f"gunicorn on {HOST}:{server.port}; Celery worker ready "
            f"({results.worker_seconds:.1f} s)",
            flush=True,
        )
        load_process.submit(ready).result()
        server_check(server, launch)
        # Scheduled and approved --prestage-seconds before the load, so that the worker pushes
        # and verifies the files ahead, as on a real launch (the load starts at its time anyway
        # if they are not all in place yet).
        start_at = time.time() + params.prestage_seconds
        plan = load_plan(launch, params, server.port, start_at)
        seeded = launch.seeded
        timeline = results.timeline
        timeline.not_before = start_at + params.flip_at
        unlock = services.unlock_schedule(
            actor=seeded.admin,
            version=launch.version,
            artifacts=[ARTIFACT],
            target_phase=Phase.GATED,
            not_before=datetime.fromtimestamp(timeline.not_before, UTC),
        )
        for approver in launch.approvers:
            unlock = services.unlock_approve(unlock=unlock, approver=approver)
        timeline.approved = time.time()
        print(
            f"unlock #{unlock.pk} approved ({unlock.state}); the load starts in "
            f"{start_at - time.time():.1f} s, for {params.duration:g} s; flip due "
            f"{params.flip_at:g} s into it",
            flush=True,
        )
        future = load_process.submit(launch_load, plan)
        gunicorn_workers = children(server.process.pid)
        celery_processes = _family(worker.pid)
        sampler = Sampler()
        measuring: tuple[float | None, float | None, tuple[int, int] | None] | None = None
        try:
            while not future.done():
                state = Unlock.objects.values_list("state", flat=True).get(pk=unlock.pk)
                timeline.seen.setdefault(state, time.time())
                if measuring is None and time.time() >= start_at:
                    # CPU from the start of the load, not the wait before it.
                    measuring = (
                        _cpu_of(gunicorn_workers),
                        _cpu_of(celery_processes),
                        machine_ticks(),
                    )
                    sampler.start()
                time.sleep(POLL_INTERVAL)
            results.records = future.result()
        finally:
            sampler.stop()
        if measuring is not None:
            cpu = results.cpu
            cpu.cores_busy = cores_busy(measuring[2])
            cpu.postgres = sampler.cpu_seconds()
            gunicorn_cpu, celery_cpu = _cpu_of(gunicorn_workers), _cpu_of(celery_processes)
            if measuring[0] is not None and gunicorn_cpu is not None:
                cpu.gunicorn = gunicorn_cpu - measuring[0]
            if measuring[1] is not None and celery_cpu is not None:
                cpu.celery = celery_cpu - measuring[1]
        unlock.refresh_from_db()
        timeline.state, timeline.reason = unlock.state, unlock.reason
        events = dict(
            AuditEvent.objects.filter(subject_type="unlock", subject_id=str(unlock.pk))
            .order_by("id")
            .values_list("action", "created_at")
        )
        timeline.staging = (
            events["unlock.staging"].timestamp() if "unlock.staging" in events else None
        )
        done = events.get("unlock.done")
        timeline.committed = done.timestamp() if done is not None else None
        if unlock.state != Unlock.State.DONE:
            results.failures.append(
                f"the unlock is {unlock.state} after the load; " + _log_tail(scratch / "celery.log")
            )
        if not server.alive():
            raise server.failed("gunicorn died during the load")
        grants_check(launch, server, results)


def grants_check(launch: Launch, server: Server, results: Results) -> None:
    """Every 201 of the load left an approved request and a live grant; a sample of the grants
    verifies offline with the JWKS and the revocation list the server publishes."""
    from django.utils import timezone

    from bench.downloads import http_request
    from licensing.grant_format import grant_verify_offline
    from licensing.models import AccessRequest, Grant

    users = launch.access_users[:-1]  # the last one made the check request
    model = launch.seeded.model
    results.approved = AccessRequest.objects.filter(
        model=model, user__in=users, status=AccessRequest.Status.APPROVED
    ).count()
    grants = Grant.objects.filter(model=model, user__in=users, revoked_at__isnull=True)
    results.grants = grants.count()
    created = sum(1 for a in _answers(results) if a[0] == ACCESS and a[4] == 201)
    if not created == results.approved == results.grants:
        results.failures.append(
            f"{created} access requests answered 201, but {results.approved} approved requests "
            f"and {results.grants} live grants"
        )
    status, jwks_body, _ = http_request(server.port, "GET", "/.well-known/jwks.json")
    listed, revocations, _ = http_request(
        server.port, "GET", "/.well-known/weightgate-revocations.jwt"
    )
    if status != 200 or listed != 200:
        raise server.failed(f"JWKS answered {status}, the revocation list {listed}")
    jwks, now = json.loads(jwks_body), timezone.now()
    for grant in grants.order_by("?")[:20]:
        check = grant_verify_offline(
            grant.token, jwks=jwks, revocations=revocations.decode(), now=now
        )
        if not check.valid or check.claims.get("sub") != str(grant.user_id):
            results.failures.append(f"grant {grant.jti} does not verify: {check.reason}")
            break
        results.verified += 1


def _answers(results: Results) -> list[Answer]:
    return results.records.answers if results.records is not None else []


def cleanup(params: Params, launch: Launch | None) -> str:
    """Staged objects under the run's prefix, and the blobs the unlock pushed (content-addressed
    random bytes of this run: no one else has them)."""
    from django.conf import settings

    from bench.downloads import staged_delete
    from release.models import Blob
    from release.publishing import blob_delete

    staged = staged_delete(params.prefix)
    blobs = 0
    if launch is not None:
        digests = list(launch.version.files.values_list("sha256", flat=True))
        blobs = Blob.objects.filter(sha256__in=digests).count()
        for sha256 in digests:
            # Recorded or not (a push cut short leaves an object without its row).
            blob_delete(bucket=settings.S3_BUCKET_GATED, sha256=sha256)
    return f"{staged} staged objects and {blobs} pushed blobs deleted"


# --- Reporting. ---------------------------------------------------------------------------------


@dataclass
class Flip:
    """The unlocking artifact's answers around the flip, in seconds after the start of the
    load (received: sent + latency)."""

    committed: float | None
    refused_before: int = 0
    granted_before: int = 0  # the violation: must stay 0
    refused_after: int = 0  # decided before the commit, or from a worker's 1 s read cache
    last_refused_after: float | None = None
    granted_after: int = 0
    first_granted: dict[str, float] = field(default_factory=dict)


def classify(records: LoadRecords, committed: float | None) -> tuple[Flip, dict[str, int]]:
    """The flip's figures, and the errors per kind: no answer, a 5xx, or a status that kind of
    request must not get (a refusal of the unlocking artifact after the flip is not an error)."""
    flip = Flip(committed=committed)
    errors = dict.fromkeys(KIND_TITLES, 0)
    for kind, new, sent, latency, status in records.answers:
        received = sent + latency
        if kind not in KIND_TITLES:  # a client whose request got no answer at all
            errors[kind] = errors.get(kind, 0) + 1
        elif kind == ACCESS:
            errors[kind] += status != 201
            continue
        if not new:
            errors[kind] += status != GRANTED[kind]
            continue
        before = committed is None or received < committed
        if status == GRANTED[kind]:
            if before:
                flip.granted_before += 1
            else:
                flip.granted_after += 1
                flip.first_granted[kind] = min(flip.first_granted.get(kind, received), received)
        elif status == REFUSED:
            if before:
                flip.refused_before += 1
            else:
                flip.refused_after += 1
                flip.last_refused_after = max(flip.last_refused_after or received, received)
        else:
            errors[kind] += 1
    return flip, errors


def _t(value: float | None) -> str:
    return f"t={value:.2f} s" if value is not None else "never"


def report(params: Params, results: Results) -> bool:
    """Print the report; whether the run passed."""
    out: list[str] = [""]
    say = out.append
    failures = list(results.failures)
    say("Weightgate launch day: downloads, access requests and an unlock flipping under load")
    say(
        f"  machine  {os.cpu_count()} CPUs, {platform.platform(terse=True)}, Python "
        f"{platform.python_version()}; load average {results.load_started:.1f} at the start, "
        f"{results.load_ended:.1f} at the end (the load process, gunicorn, the worker, "
        "PostgreSQL, Redis and the object store share these cores with whatever else runs)"
    )
    say(
        f"  server   gunicorn config.wsgi (infra/gunicorn.conf.py: gthread), {params.workers} "
        f"workers x {os.environ.get('WEB_THREADS', '4')} threads, DEBUG=0, loopback; rate "
        "limit and daily quota raised (still counted in Redis per request)"
    )
    say(
        f"  worker   celery worker --beat, {params.celery_concurrency} prefork processes, queue "
        f"{params.queue}, Redis db {params.redis_db}; the unlock tick every "
        f"{os.environ.get('UNLOCK_TICK_SECONDS', '?')} s (ready {results.worker_seconds:.1f} s "
        "after start)"
    )
    downloads = params.connections
    rest = downloads // 4
    say(
        f"  load     one separate asyncio process, {params.duration:g} s: {downloads} token "
        f"holders' keep-alive connections ({downloads - rest} Hub resolve, {rest} REST), every "
        f"other request for the unlocking artifact; {params.access_connections} connections "
        f"of access requests, up to {params.access_rate:g}/s, each a new user's session + CSRF"
    )
    say(
        f"  data     {params.files} gated files (rows) of v1; v2 proprietary -> gated: "
        f"{results.new_files} files, {results.staged_bytes / 2**20:.1f} MiB staged and "
        f"ingested; {params.holders} holders with a grant and a token; "
        f"{results.access_users} users with a session (seeded in {results.seed_seconds:.1f} s)"
    )
    records = results.records
    timeline = results.timeline
    if records is not None:
        committed = timeline.committed - records.started if timeline.committed is not None else None
        flip, errors = classify(records, committed)
        not_before = timeline.not_before - records.started
        ready = _seen(timeline, "ready", records)
        say("")
        header = (
            f"{'traffic kind':<40}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'errors':>8}"
        )
        say(header)
        say("-" * len(header))
        rows: list[tuple[str, list[Answer], int]] = []
        for kind, title in KIND_TITLES.items():
            answers = [a for a in records.answers if a[0] == kind]
            rows.append((title, answers, errors[kind]))
            if kind in GRANTED:
                rows.append(("  of which the unlocking artifact", [a for a in answers if a[1]], -1))
        rows.append(("all", records.answers, sum(errors.values())))
        for title, answers, error_count in rows:
            latencies = [a[3] for a in answers]
            say(
                f"{title:<40}{len(answers):>9}{len(answers) / records.seconds:>9.1f}"
                f"{percentile_ms(latencies, 0.5):>9.1f}{percentile_ms(latencies, 0.99):>9.1f}"
                f"{error_count if error_count >= 0 else '':>8}"
            )
        say(
            f"  {records.connects} connections opened for {len(records.answers)} requests; "
            f"{records.access_left} access requests not sent when the load ended"
        )
        say("")
        say(
            f"flip: approved at {_t(timeline.approved - records.started)}, pushes queued "
            f"{_t(timeline.staging - records.started if timeline.staging else None)}, "
            f"pre-staged (ready) {_t(ready)}; scheduled not_before {_t(not_before)}; "
            f"committed at {_t(committed)} (its last write; the driver saw it done at "
            f"{_t(_seen(timeline, 'done', records))})"
            + (
                f"; {committed - max(not_before, ready):.2f} s after it was both due and ready"
                if committed is not None and ready is not None
                else ""
            )
        )
        say(
            f"      first 302 for the new artifact at {_t(flip.first_granted.get(RESOLVE))}, "
            f"first 200 (REST) at {_t(flip.first_granted.get(FILE))}; before the flip "
            f"{flip.refused_before} refusals ({REFUSED}), {flip.granted_before} successes "
            f"(302/200); after it {flip.granted_after} successes, {flip.refused_after} refusals"
            + (
                f" (the last {flip.last_refused_after - committed:.2f} s after the commit: "
                "answers decided before it, or read from a worker's 1 s memory)"
                if flip.last_refused_after is not None and committed is not None
                else ""
            )
        )
        if flip.granted_before:
            failures.append(
                f"{flip.granted_before} clients got the unlocking artifact before the flip "
                "committed"
            )
        if committed is None or committed > records.seconds:
            failures.append(
                f"the flip did not commit during the load (unlock {timeline.state}"
                f"{': ' + timeline.reason if timeline.reason else ''}): the property was not "
                "exercised"
            )
        elif not flip.granted_after:
            failures.append("no client got the unlocking artifact after the flip")
        if not flip.refused_before:
            failures.append("no request for the unlocking artifact was answered before the flip")
        if sum(errors.values()):
            failures.append(f"{sum(errors.values())} errors: {errors}")
        for kind, samples in records.samples.items():
            for sample in samples:
                say(f"  {kind}: {sample}")
        created = sum(1 for a in records.answers if a[0] == ACCESS and a[4] == 201)
        say(
            f"access requests: {created} answered 201, {results.approved} approved, "
            f"{results.grants} grants signed ({results.verified} verified offline with the "
            "server's JWKS and revocation list)"
        )
        cpu = results.cpu
        say(
            "CPU during the load: "
            + ", ".join(
                f"{label} {value:.1f} s"
                for label, value in (
                    ("gunicorn workers", cpu.gunicorn),
                    ("Celery worker", cpu.celery),
                    ("PostgreSQL backends", cpu.postgres),
                    ("load process", records.cpu_seconds),
                )
                if value is not None
            )
            + (
                f"; machine {cpu.cores_busy:.2f} of {os.cpu_count()} cores busy (everyone's)"
                if cpu.cores_busy is not None
                else ""
            )
        )
    elif not failures:
        failures.append("no load ran")
    say(f"cleanup: {results.cleaned}; the database and the Redis db go next")
    for failure in failures:
        say(f"FAILED {failure}")
    say("RESULT: " + ("FAILED" if failures else "passed"))
    print("\n".join(out), flush=True)
    return not failures


def _seen(timeline: Timeline, state: str, records: LoadRecords) -> float | None:
    seen = timeline.seen.get(state)
    return seen - records.started if seen is not None else None


# --- Entry points. ------------------------------------------------------------------------------


def driver_main(params_json: str) -> int:
    """The bench on the bench database, in a child process whose environment names it."""
    import django

    django.setup()
    from bench.licensing import routing_check

    params = Params(**json.loads(params_json))
    results = Results()
    launch: list[Launch] = []
    try:
        routing_check(params.queue)
        run(params, results, launch)
    except (BenchFailed, ServerFailed) as failure:
        results.failures.append(str(failure))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        results.failures.append("interrupted")
    finally:
        results.load_ended = os.getloadavg()[0]
        try:
            results.cleaned = cleanup(params, launch[0] if launch else None)
        except Exception as error:  # reported; the database and Redis db still go
            results.cleaned = f"cleanup failed: {type(error).__name__}: {error}"
    if report(params, results):
        return 0
    logs_keep(params)
    return 1


def logs_keep(params: Params) -> None:
    """After a failure: the server's and the worker's logs outlive the scratch directory, and
    their error lines are shown."""
    import shutil

    for name in ("gunicorn.log", "celery.log"):
        log = Path(params.scratch) / name
        if not log.exists():
            continue
        kept = Path(params.scratch).parent / f"weightgate-bench-launch-{params.run_id}-{name}"
        shutil.copyfile(log, kept)
        lines = log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if "ERROR" in line or "Traceback" in line]
        print(f"{name}: {kept} ({len(errors)} error lines)")
        for line in errors[:5]:
            print(f"    {line[:400]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 15 s, small files")
    parser.add_argument("--duration", type=float, help="seconds of load (default 60; quick 15)")
    parser.add_argument(
        "--flip-at", type=float, help="seconds into the load the unlock is due (default 40%%)"
    )
    parser.add_argument(
        "--prestage-seconds",
        type=float,
        help="seconds between the unlock's approval and the load, for the worker to pre-stage "
        "its files (default 15; quick 10)",
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="token holders' connections (default 32)"
    )
    parser.add_argument(
        "--access-connections", type=int, default=4, help="access request connections (4)"
    )
    parser.add_argument(
        "--access-rate", type=float, default=20.0, help="access requests per second at most (20)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--celery-concurrency", type=int, default=2, help="Celery worker processes (default 2)"
    )
    parser.add_argument("--files", type=int, default=50, help="gated files of v1 (default 50)")
    parser.add_argument("--holders", type=int, default=32, help="grant holders (default 32)")
    parser.add_argument("--unlock-shards", type=int, help="staged shards to unlock (8; quick 4)")
    parser.add_argument(
        "--unlock-shard-kib", type=int, help="KiB per staged shard (8192; quick 1024)"
    )
    parser.add_argument(
        "--database", help="throwaway database, dropped and created (default: one per run)"
    )
    args = parser.parse_args(argv)
    values = {**(QUICK if args.quick else DEFAULTS)}
    for name in values:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    flip_at = args.flip_at if args.flip_at is not None else 0.4 * values["duration"]
    counts = (args.connections, args.access_connections, args.workers, args.celery_concurrency)
    if min(*counts, args.files, args.holders, values["unlock_shards"]) < 1:
        parser.error("connections, workers, concurrency, files, holders, shards must be positive")
    if min(values["duration"], args.access_rate, values["unlock_shard_kib"]) <= 0:
        parser.error("--duration, --access-rate and --unlock-shard-kib must be positive")
    if values["prestage_seconds"] < 0:
        parser.error("--prestage-seconds must not be negative")
    if not 0 < flip_at < values["duration"]:
        parser.error("--flip-at must fall inside the load")

    from bench.downloads import UNTHROTTLED, redis_database
    from config.settings import env_str  # also reads .local/env, like every other entry point

    run_id = secrets.token_hex(4)
    database = args.database or f"weightgate_bench_launch_{run_id}"
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="weightgate-bench-launch-") as scratch,
        bench_database(env_str("DATABASE_URL"), database) as database_url,
        redis_database(env_str("REDIS_URL"), run_id) as (redis_url, redis_db),
    ):
        params = Params(
            run_id=run_id,
            database=database,
            redis_db=redis_db,
            queue=f"bench-launch-{run_id}",
            duration=values["duration"],
            flip_at=flip_at,
            prestage_seconds=values["prestage_seconds"],
            connections=args.connections,
            access_connections=args.access_connections,
            access_rate=args.access_rate,
            workers=args.workers,
            celery_concurrency=args.celery_concurrency,
            files=args.files,
            holders=args.holders,
            unlock_shards=values["unlock_shards"],
            unlock_shard_kib=values["unlock_shard_kib"],
            scratch=scratch,
        )
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            # Plain HTTP on loopback: cookies that require HTTPS would never come back.
            "SECURE_COOKIES": "0",
            # Every task goes to the run's queue, which only the run's worker consumes.
            "CELERY_TASK_DEFAULT_QUEUE": params.queue,
            "CELERY_TRANSFER_QUEUE": params.queue,
            # The tick flips a ready unlock within a second of its due time.
            "UNLOCK_TICK_SECONDS": "1",
            # The approvals' emails are rendered and handed to a backend that drops them.
            "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
            # The load would exhaust the per-token limit and per-grant quota in seconds.
            "DOWNLOAD_RATE_PER_MINUTE": str(UNTHROTTLED),
            "DOWNLOAD_DAILY_QUOTA": str(UNTHROTTLED),
        }
        status = migrate_and_drive(env, database, "bench.launch", json.dumps(asdict(params)))
    print(
        f"cleanup: database {database} dropped, Redis db {redis_db} emptied; "
        f"total {time.perf_counter() - started:.0f} s"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
