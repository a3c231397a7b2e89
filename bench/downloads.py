"""Authorised download requests per second next to a bare Django view, with a small and a large
licensing database, and whole-model downloads with the weightgate CLI next to huggingface_hub and
parallel curl, on a real server and the real object store.

Run from the project root (`.venv/bin/python bench/downloads.py --help`; `--quick` for a smoke
run). It creates a throwaway database next to DATABASE_URL's (the demo data is never touched) and
takes an empty Redis database of REDIS_URL's server for the bench server's throttle counters,
download log and Celery messages, migrates, then, in a child process whose DATABASE_URL and
REDIS_URL name those:

(a) seeds a gated model (one sealed version, --files files as rows: the resolve path never reads
    the bytes), a published license and --holders users, each with a grant (access_grant_direct)
    and a download token (token_create); serves it with gunicorn as configured in
    infra/gunicorn.conf.py, and loads it from a separate asyncio process (bench/catalog_api.py's
    load generator) over --connections keep-alive connections, connection i sending token
    i mod --holders and walking the files in turn from its own starting file. Measured: the
    Hub's `HEAD /{org}/{name}/resolve/{commit}/{path}` (302, what clients send first; a HEAD is
    not a download) and `GET /api/v1/models/{org}/{name}/versions/{v}/files/{path}` with
    `Prefer: no-redirect` (200 with the URL; counted as a download), each as a ratio of /healthz,
    a bare Django view on the same server. Presigned URLs are cached per process, so each worker
    presigns each file once and then answers from its cache: the run says how many presigns that
    took. The per-token rate limit and per-grant daily quota are raised for the bench server
    (the load would exhaust them in seconds) but still counted: drawn from Redis in advance, up
    to 32 units at a time per worker (release.distribution.download_throttle).
    Then the same requests in this process (Django's test client, whole middleware stack) under
    cProfile: SQL queries and Redis round trips per request and where the CPU goes.
(b) adds --grants filler grants (a fixed placeholder instead of a signed JWS: they are never
    verified) over --filler-users users and --filler-models models plus the bench model, and
    --tokens filler tokens (sha256 of made-up values), with COPY, then VACUUM ANALYZE, and runs
    (a) again against the same server; the plans of the request's queries are shown.
(c) stages --shards safetensors shards of --shard-mib MiB of random bytes in the staging bucket,
    ingests them into a second gated model through the services (hashed, sealed and signed), and
    downloads the version into a fresh directory, --download-rounds times each: with
    `weightgate download` (sha256 of every file and the version signature checked), with
    `huggingface_hub.snapshot_download` (size checks only; also shown with a sha256 pass
    afterwards) and with parallel `curl` on URLs fetched with `Prefer: no-redirect` (also shown
    with a sha256 pass afterwards, hashlib on every core). Every tool runs as its own process.

At the end it stops gunicorn, deletes the staged objects, empties its Redis database and drops
its database. Figures only: nothing here asserts on timings. The exit status is non-zero only when
something failed (the server died, a request got an unexpected answer, a download failed or its
bytes differ from the release).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import http.client
import io
import json
import math
import os
import platform
import pstats
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on the path, and bench/licensing.py would shadow the app.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PROJECT_ROOT / "bench"]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from bench.catalog_api import (  # noqa: E402
    HOST,
    Endpoint,
    Server,
    ServerFailed,
    bench_database,
    gunicorn_running,
    measure,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from mypy_boto3_s3 import S3Client

    from licensing.models import License, SigningKey
    from release.models import Model, Version

MiB = 1024 * 1024
ORG = "bench-dl"
RESOLVE_MODEL = "resolve"
SHARDS_MODEL = "shards"
VERSION = "v1"
ARTIFACT = "weights"
# The throttles stay on (every request counted in Redis) but cannot trip during the load.
UNTHROTTLED = 1_000_000_000
# What filler grants carry instead of a signed grant: never verified, only there to be rows.
FILLER_JWS = "filler.not-a-signed-grant.bench-downloads"
REDIS_CLAIM_KEY = "weightgate-bench-downloads:claimed-by"
LICENSE_TEXT = "Bench license: use these random bytes for nothing at all.\n"
CURL_PARALLEL = 8  # the CLI's and huggingface_hub's default number of connections too

QUICK: dict[str, Any] = {
    "duration": 2.0,
    "warmup": 0.5,
    "rounds": 1,
    "grants": 100_000,
    "tokens": 10_000,
    "filler_users": 10_000,
    "filler_models": 200,
    "shards": 4,
    "shard_mib": 16,
    "download_rounds": 1,
    "profile": 300,
}
DEFAULTS: dict[str, Any] = {
    "duration": 6.0,
    "warmup": 1.0,
    "rounds": 2,
    "grants": 1_000_000,
    "tokens": 100_000,
    "filler_users": 100_000,
    "filler_models": 2_000,
    "shards": 8,
    "shard_mib": 64,
    "download_rounds": 2,
    "profile": 2000,
}


class BenchFailed(Exception):
    """Something failed: a failure to report, not a figure."""


@dataclass(frozen=True)
class Params:
    run_id: str
    database: str
    redis_db: int
    duration: float
    warmup: float
    rounds: int
    connections: int
    workers: int
    files: int
    holders: int
    grants: int
    tokens: int
    filler_users: int
    filler_models: int
    shards: int
    shard_mib: int
    download_rounds: int
    profile: int
    sections: str
    scratch: str

    @property
    def prefix(self) -> str:
        return f"bench-downloads/{self.run_id}/"


# --- A Redis database of the bench's own. -------------------------------------------------------


def _redis_url(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@contextmanager
def redis_database(url: str, run_id: str) -> Iterator[tuple[str, int]]:
    """An empty numbered database on REDIS_URL's server (the highest free one), claimed with a
    key so that a concurrent run skips it, and emptied on the way out; yields its URL and
    number. The bench server's rate-limit counters, download log and Celery messages go there,
    away from the demo's and the tests' (which use REDIS_URL's own database)."""
    import redis

    own = int(urlsplit(url).path.lstrip("/") or 0)
    probe = redis.Redis.from_url(url)
    try:
        count = int(probe.config_get("databases").get("databases") or 16)
    except redis.RedisError:
        count = 16
    finally:
        probe.close()
    for db in range(count - 1, 0, -1):
        if db == own:
            continue
        client = redis.Redis.from_url(_redis_url(url, db))
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, run_id, nx=True):
            break
        client.close()
    else:
        raise SystemExit(f"no empty Redis database on {url}'s server for the bench")
    try:
        yield _redis_url(url, db), db
    finally:
        if client.get(REDIS_CLAIM_KEY) == run_id.encode():
            client.flushdb()
        client.close()


# --- Seeding: in the driver process, on the bench database. ------------------------------------


@dataclass
class Seeded:
    admin: User
    license: License
    grants_key: SigningKey
    model: Model
    version: Version
    paths: list[str]
    holders: list[User]
    tokens: list[str]


def seed(*, files: int, holders: int, prefix: str) -> Seeded:
    """The gated model of (a) through the release services (`files` files as rows, their storage
    keys under `prefix`), its gate, and `holders` grant holders, each with a grant
    (access_grant_direct) and a token (token_create)."""
    from django.contrib.auth.models import User

    from licensing import access
    from licensing.keys import signing_key_ensure
    from licensing.models import License
    from licensing.tokens import token_create
    from release import services
    from release.models import Phase

    admin = User.objects.create_user("bench-admin", is_staff=True, is_superuser=True)
    signing_key_ensure(purpose="models")  # sealing signs the version
    grants_key = signing_key_ensure(purpose="grants")
    license = access.license_publish(
        actor=admin,
        license=License.objects.create(
            slug="bench-downloads", version="1.0", title="Bench license", text=LICENSE_TEXT
        ),
    )
    model = services.model_create(actor=admin, org=ORG, name=RESOLVE_MODEL, title="Bench model")
    version = services.version_create(actor=admin, model=model, name=VERSION)
    artifact = services.artifact_create(actor=admin, version=version, name=ARTIFACT)
    paths = [f"model-{index + 1:05d}-of-{files:05d}.safetensors" for index in range(files)]
    for index, path in enumerate(paths):
        key = f"{prefix}rows/{path}"  # a row only: nothing is uploaded for (a)
        services.file_add(
            artifact=artifact,
            path=path,
            size=4_000_000_000 + index,
            sha256=hashlib.sha256(key.encode()).hexdigest(),
            storage_key=key,
        )
    version = services.version_seal(actor=admin, version=version)
    services.artifact_set_phase(actor=admin, artifact=artifact, phase=Phase.GATED)
    access.gate_policy_set(actor=admin, model=model, license=license)
    users = [User.objects.create_user(f"bench-holder-{index:03d}") for index in range(holders)]
    tokens = []
    for holder in users:
        access.access_grant_direct(model=model, user=holder, reviewer=admin)
        tokens.append(token_create(user=holder, name="bench")[1])
    return Seeded(admin, license, grants_key, model, version, paths, users, tokens)


# --- (a) and (b): requests per second. ---------------------------------------------------------


def endpoints_for(seeded: Seeded, connections: int) -> list[Endpoint]:
    model, version = seeded.model, seeded.version
    auth = [{"Authorization": f"Bearer {token}"} for token in seeded.tokens]
    resolve = [f"/{model.org}/{model.name}/resolve/{version.commit}/{p}" for p in seeded.paths]
    files = [
        f"/api/v1/models/{model.org}/{model.name}/versions/{version.name}/files/{p}"
        for p in seeded.paths
    ]
    return [
        Endpoint("bare view", "/healthz"),
        Endpoint(
            "Hub resolve",
            resolve[0],
            method="HEAD",
            expect=302,
            paths=resolve,
            headers=auth,
        ),
        Endpoint(
            "REST file, no-redirect",
            files[0],
            paths=files,
            headers=[{**h, "Prefer": "no-redirect"} for h in auth],
        ),
    ]


def http_request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request(method, path, headers={"Accept": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def endpoints_check(server: Server, endpoints: list[Endpoint]) -> None:
    """One request of each, its answer as expected, before any load."""
    for endpoint in endpoints:
        headers = endpoint.headers[0] if endpoint.headers else None
        status, body, _ = http_request(server.port, endpoint.method, endpoint.path, headers)
        if status != endpoint.expect:
            raise server.failed(
                f"{endpoint.method} {endpoint.path} answered {status}, not {endpoint.expect}: "
                f"{body[:300]!r}"
            )
        endpoint.body_bytes = len(body)


@dataclass
class LoadFigures:
    endpoints: list[Endpoint]
    queries: dict[str, str] = field(default_factory=dict)  # SQL per request, cold/warm
    log_tail: list[str] = field(default_factory=list)  # gunicorn's, when a request failed

    def by_label(self) -> dict[str, Endpoint]:
        return {e.label: e for e in self.endpoints}


def load_section(
    seeded: Seeded, server: Server, params: Params, title: str
) -> tuple[LoadFigures, list[str]]:
    endpoints = endpoints_for(seeded, params.connections)
    endpoints_check(server, endpoints)
    print(f"{title}: loading {server.log.parent.name}", flush=True)
    measure(
        endpoints,
        server=server,
        connections=params.connections,
        warmup=params.warmup,
        duration=params.duration,
        rounds=params.rounds,
    )
    figures = LoadFigures(endpoints)
    if any(e.total("errors") for e in endpoints):
        figures.log_tail = server.log.read_text(errors="replace").splitlines()[-30:]
    counts, sql = request_queries(seeded)
    figures.queries = counts
    return figures, sql


# --- In this process: SQL, plans, and cProfile. ------------------------------------------------


def _client() -> Any:
    """Django's test client with its middleware loaded (WhiteNoise scans the static files then)."""
    from django.test import Client

    client = Client(HTTP_HOST=HOST)
    client.get("/healthz")
    return client


def _in_process_request(client: Any, kind: str, seeded: Seeded, index: int) -> Any:
    token = seeded.tokens[index % len(seeded.tokens)]
    path = seeded.paths[index % len(seeded.paths)]
    model, version = seeded.model, seeded.version
    auth = {"authorization": f"Bearer {token}"}
    if kind == "resolve":
        response = client.head(
            f"/{model.org}/{model.name}/resolve/{version.commit}/{path}", headers=auth
        )
        expected = 302
    elif kind == "file":
        response = client.get(
            f"/api/v1/models/{model.org}/{model.name}/versions/{version.name}/files/{path}",
            headers={**auth, "prefer": "no-redirect", "accept": "application/json"},
        )
        expected = 200
    else:
        response = client.get("/healthz")
        expected = 200
    if response.status_code != expected:
        raise BenchFailed(f"in-process {kind} answered {response.status_code}")
    return response


KINDS = {"healthz": "bare view", "resolve": "Hub resolve", "file": "REST file, no-redirect"}


def request_queries(seeded: Seeded) -> tuple[dict[str, str], list[str]]:
    """SQL queries of one request of each kind with nothing remembered (licensing.read_cache
    emptied) and with everything remembered (the same request again, twice: the second use of
    a sealed file also reads its version's phases), as "cold/warm"; and the plan of each query
    of a cold resolve on the current database. The token's use is recorded first (one UPDATE a
    minute per token, not counted)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from licensing import read_cache

    client = _client()
    counts: dict[str, str] = {}
    listing: list[str] = []
    for kind, label in KINDS.items():
        _in_process_request(client, kind, seeded, 0)
        read_cache.forget()
        with CaptureQueriesContext(connection) as captured:
            _in_process_request(client, kind, seeded, 0)
        # Copied now: every request (request_started) empties the connection's query log.
        cold = list(captured.captured_queries)
        _in_process_request(client, kind, seeded, 0)
        with CaptureQueriesContext(connection) as warm:
            _in_process_request(client, kind, seeded, 0)
        counts[label] = f"{len(cold)}/{len(warm)}"
        if kind != "resolve":
            continue
        with connection.cursor() as cursor:
            for number, query in enumerate(cold, 1):
                sql = query["sql"]
                cursor.execute("EXPLAIN " + sql)
                plan = [row[0] for row in cursor.fetchall()]
                scans = [line.strip().removeprefix("->  ") for line in plan if "Scan" in line]
                listing.append(f"  {number}. {sql[:160]}{'…' if len(sql) > 160 else ''}")
                listing.extend(f"       plan: {scan[:110]}" for scan in scans)
    return counts, listing


@dataclass
class Profiled:
    label: str
    count: int
    wall_ms: float  # per request, without the profiler
    cpu_ms: float
    redis_round_trips: float  # per request
    buckets: list[tuple[str, float]]  # (what, CPU ms per request), under the profiler
    profiled_cpu_ms: float
    text: str


# Where a request's time goes: cumulative CPU of these functions (file suffix, function name).
BUCKETS: list[tuple[str, str, str]] = [
    ("DRF authentication (token lookup)", "licensing/authentication.py", "authenticate"),
    ("file_by_revision", "release/selectors.py", "file_by_revision"),
    ("file_download_decision", "release/selectors.py", "file_download_decision"),
    ("  of which grant_live_for", "licensing/selectors.py", "grant_live_for"),
    ("download_throttle (Redis: counters, log)", "release/distribution.py", "download_throttle"),
    ("download_url (location + presign cache)", "release/distribution.py", "download_url"),
    ("  of which file_location (Blob query)", "release/distribution.py", "file_location"),
    ("all SQL: Django ORM execute_sql", "django/db/models/sql/compiler.py", "execute_sql"),
    ("  of which psycopg execute", "psycopg/cursor.py", "execute"),
    ("all Redis commands", "redis/connection.py", "send_packed_command"),
    ("  waiting for Redis replies", "redis/connection.py", "read_response"),
]


def _stat_sum(stats: pstats.Stats, suffix: str, name: str) -> tuple[int, float]:
    """Calls and cumulative seconds of the functions named `name` in files ending `suffix`,
    counting only outermost calls (recursion and callers within the same set excluded)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    keys = {k for k in raw if k[0].endswith(suffix) and k[2] == name}
    calls, seconds = 0, 0.0
    for key in keys:
        _, nc, _, ct, callers = raw[key]
        # cumulative time of calls made from outside the set (no double counting)
        inner = sum(v[1] for c, v in callers.items() if c in keys)
        inner_ct = sum(v[3] for c, v in callers.items() if c in keys)
        calls += nc - inner
        seconds += ct - inner_ct
    return calls, seconds


def profile_in_process(seeded: Seeded, count: int) -> list[Profiled]:
    """`count` requests of each kind timed plainly, then `count` more under cProfile (CPU time,
    not wall time: on a shared machine, waits for a core would blur the picture)."""
    client = _client()
    results = []
    for kind, label in KINDS.items():
        for index in range(50):  # warm: tokens used this minute, every URL presigned
            _in_process_request(client, kind, seeded, index)
        started, cpu_started = time.perf_counter(), time.process_time()
        for index in range(count):
            _in_process_request(client, kind, seeded, index)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for index in range(count, 2 * count):
            _in_process_request(client, kind, seeded, index)
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = stats.total_tt  # type: ignore[attr-defined]
        buckets = []
        for what, suffix, name in BUCKETS:
            calls, seconds = _stat_sum(stats, suffix, name)
            if calls:
                buckets.append((f"{what} [{calls / count:.1f}/req]", 1000 * seconds / count))
        round_trips = _stat_sum(stats, "redis/connection.py", "send_packed_command")[0] / count
        out = io.StringIO()
        shown = pstats.Stats(profiler, stream=out).strip_dirs()
        shown.sort_stats("cumulative").print_stats(40)
        shown.sort_stats("tottime").print_stats(20)
        results.append(
            Profiled(
                label=label,
                count=count,
                wall_ms=1000 * wall / count,
                cpu_ms=1000 * cpu / count,
                redis_round_trips=round_trips,
                buckets=buckets,
                profiled_cpu_ms=1000 * total / count,
                text=out.getvalue(),
            )
        )
    return results


# --- (b) filler. ---------------------------------------------------------------------------------


@dataclass
class Filler:
    users: int = 0
    models: int = 0
    grants: int = 0
    tokens: int = 0
    grants_on_bench_model: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _copy(cursor: Any, statement: str, lines: Iterator[str], *, batch: int = 20_000) -> int:
    """COPY text rows (no field holds a tab, newline or backslash), sent in batches."""
    count = 0
    buffer: list[str] = []
    with cursor.copy(statement) as copy:
        for line in lines:
            buffer.append(line)
            if len(buffer) >= batch:
                copy.write("".join(buffer))
                count += len(buffer)
                buffer.clear()
        if buffer:
            copy.write("".join(buffer))
            count += len(buffer)
    return count


def filler_insert(seeded: Seeded, params: Params) -> Filler:
    """Users, models, grants and tokens that are not the bench's, with COPY on one connection,
    then VACUUM ANALYZE (the statistics the planner needs, and no autovacuum starting in the
    middle of the measurement) and a CHECKPOINT. One in ten filler grants is for the bench's
    gated model, so its (user, model) and model indexes hold many rows; one in twenty is
    revoked, one in ten expires in the future."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    filler = Filler()
    rng = random.Random(params.run_id)
    now = "2026-11-01 00:00:00+00"
    later = "2027-11-01 00:00:00+00"
    with psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
    ) as connection:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            filler.users = _copy(
                cursor,
                "COPY auth_user (password, is_superuser, username, first_name, last_name, "
                "email, is_staff, is_active, date_joined) FROM STDIN",
                (
                    f"!\tf\tfiller-{i:07d}\t\t\tfiller-{i:07d}@example.com\tf\tt\t{now}\n"
                    for i in range(params.filler_users)
                ),
            )
            cursor.execute("SELECT id FROM auth_user WHERE username LIKE 'filler-%' ORDER BY id")
            users = [row[0] for row in cursor.fetchall()]
            filler.models = _copy(
                cursor,
                "COPY release_model (org, name, title, card, created_at) FROM STDIN",
                (
                    f"filler-{i % 97}\tmodel-{i:06d}\tFiller model\t\t{now}\n"
                    for i in range(params.filler_models)
                ),
            )
            cursor.execute("SELECT id FROM release_model WHERE title = 'Filler model' ORDER BY id")
            models = [row[0] for row in cursor.fetchall()]
            connection.commit()
            filler.seconds["users and models"] = time.perf_counter() - started

            started = time.perf_counter()
            bench_model = seeded.model.pk
            license_id, license_sha = seeded.license.pk, seeded.license.text_sha256
            kid = seeded.grants_key.kid

            def grant_rows() -> Iterator[str]:
                for index in range(params.grants):
                    user = users[rng.randrange(len(users))] if users else seeded.admin.pk
                    on_bench = index % 10 == 0 or not models
                    model = bench_model if on_bench else models[rng.randrange(len(models))]
                    filler.grants_on_bench_model += on_bench
                    revoked = now if index % 20 == 7 else "\\N"
                    expires = later if index % 10 == 3 else "\\N"
                    yield (
                        f"{uuid.UUID(int=rng.getrandbits(128), version=4)}\t\\N\t{user}\t{model}"
                        f'\t["*"]\t{license_id}\t{license_sha}\t{kid}\t{FILLER_JWS}\t{now}'
                        f"\t{expires}\t{revoked}\t\t\\N\n"
                    )

            filler.grants = _copy(
                cursor,
                "COPY licensing_grant (jti, request_id, user_id, model_id, artifacts, license_id, "
                "license_sha256, kid, token, issued_at, expires_at, revoked_at, revoked_reason, "
                "suspended_at) FROM STDIN",
                grant_rows(),
            )
            connection.commit()
            filler.seconds["grants"] = time.perf_counter() - started

            started = time.perf_counter()
            salt = f"bench-downloads-{params.run_id}-"
            filler.tokens = _copy(
                cursor,
                "COPY licensing_downloadtoken (user_id, name, token_hash, hint, scope, model_ids, "
                "expires_at, revoked_at, last_used_at, created_at) FROM STDIN",
                (
                    f"{users[i % len(users)] if users else seeded.admin.pk}\tfiller\t"
                    f"{hashlib.sha256((salt + str(i)).encode()).hexdigest()}\tfill\tread\t[]"
                    f"\t\\N\t\\N\t\\N\t{now}\n"
                    for i in range(params.tokens)
                ),
            )
            connection.commit()
            filler.seconds["tokens"] = time.perf_counter() - started

        started = time.perf_counter()
        connection.autocommit = True
        for table in ("auth_user", "release_model", "licensing_grant", "licensing_downloadtoken"):
            connection.execute(f"VACUUM ANALYZE {table}")
        filler.seconds["VACUUM ANALYZE"] = time.perf_counter() - started
        # The new pages are written out now, not by the checkpointer during the measurement.
        started = time.perf_counter()
        connection.execute("CHECKPOINT")
        filler.seconds["CHECKPOINT"] = time.perf_counter() - started
    return filler


def table_sizes() -> dict[str, tuple[int, str]]:
    from django.db import connection

    sizes = {}
    with connection.cursor() as cursor:
        for table in ("auth_user", "licensing_grant", "licensing_downloadtoken", "release_model"):
            cursor.execute(
                f"SELECT count(*), pg_size_pretty(pg_total_relation_size('{table}')) FROM {table}"  # noqa: S608
            )
            count, size = cursor.fetchone()
            sizes[table] = (int(count), str(size))
    return sizes


# --- (c) whole-model downloads. ------------------------------------------------------------------


@dataclass
class Shards:
    repo_id: str
    revision: str
    commit: str
    files: dict[str, tuple[int, str]]  # path -> (size, sha256)
    staged_seconds: float
    ingest_seconds: float

    @property
    def nbytes(self) -> int:
        return sum(size for size, _ in self.files.values())


def _s3() -> S3Client:
    from release.storage import s3_client

    return s3_client()


def shards_stage(*, prefix: str, shards: int, shard_bytes: int) -> float:
    """`shards` safetensors files of `shard_bytes` random bytes each (new blobs every time: they
    are content-addressed) in the staging bucket under `prefix`; the seconds it took."""
    import numpy as np
    from django.conf import settings
    from safetensors.numpy import save

    client = _s3()
    rng = np.random.default_rng(secrets.randbits(128))
    started = time.perf_counter()
    for index in range(shards):
        tensor = np.frombuffer(rng.bytes(shard_bytes), dtype=np.uint8)
        key = f"{prefix}model-{index + 1:05d}-of-{shards:05d}.safetensors"
        client.upload_fileobj(io.BytesIO(save({"weight": tensor})), settings.S3_BUCKET_STAGING, key)
        del tensor
    return time.perf_counter() - started


def version_ingest(
    *, actor: User, model: Model, version_name: str, sources: dict[str, str]
) -> Version:
    """Ingest staged files ({artifact: s3:// prefix}) into a new version in this process, as
    tests/staging.py's ingest_now does (what the workers would do): hashed, sealed, signed."""
    from release import services
    from release.models import IngestJob

    job = services.ingest_start(
        actor=actor, model=model, version_name=version_name, sources=sources
    )
    for file_id in job.files.values_list("pk", flat=True):
        services.ingest_file_hash(file_id=file_id)
    job = services.ingest_finalize(job_id=job.pk)
    if job.state != IngestJob.State.SEALED or job.version is None:
        raise BenchFailed(f"ingest of {model}@{version_name} failed: {job.error}")
    return job.version


def shards_prepare(seeded: Seeded, params: Params) -> Shards:
    """Random safetensors shards in the staging bucket, ingested (hashed, sealed, signed), gated,
    and granted to the first holder."""
    from django.conf import settings

    from licensing import access
    from release import services
    from release.models import Phase

    prefix = f"{params.prefix}shards/"
    staged = shards_stage(prefix=prefix, shards=params.shards, shard_bytes=params.shard_mib * MiB)
    started = time.perf_counter()
    model = services.model_create(actor=seeded.admin, org=ORG, name=SHARDS_MODEL)
    version = version_ingest(
        actor=seeded.admin,
        model=model,
        version_name=VERSION,
        sources={ARTIFACT: f"s3://{settings.S3_BUCKET_STAGING}/{prefix}"},
    )
    ingested = time.perf_counter() - started
    artifact = version.artifacts.get(name=ARTIFACT)
    services.artifact_set_phase(actor=seeded.admin, artifact=artifact, phase=Phase.GATED)
    access.gate_policy_set(actor=seeded.admin, model=model, license=seeded.license)
    access.access_grant_direct(model=model, user=seeded.holders[0], reviewer=seeded.admin)
    return Shards(
        repo_id=f"{ORG}/{SHARDS_MODEL}",
        revision=VERSION,
        commit=str(version.commit),
        files={f.path: (f.size, f.sha256) for f in version.files.all()},
        staged_seconds=staged,
        ingest_seconds=ingested,
    )


def staged_delete(prefix: str) -> int:
    """Delete every staging object under `prefix` (a run's); how many."""
    from django.conf import settings

    client = _s3()
    bucket = settings.S3_BUCKET_STAGING
    try:
        keys = [
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for item in page.get("Contents", [])
        ]
    except client.exceptions.NoSuchBucket:  # section (c) did not run: nothing was staged
        return 0
    for start in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]]},
        )
    return len(keys)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def digests_of(folder: Path, paths: Sequence[str]) -> dict[str, str]:
    """sha256 of each file, hashlib on every core (it releases the GIL while hashing)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(paths, pool.map(lambda p: _sha256(folder / p), paths), strict=True))


@dataclass
class Run:
    tool: str
    checks: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds of the tool's processes

    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan


def _cpu() -> float:
    """CPU seconds of this process and of its children that have exited (the tools)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


HF_SCRIPT = """
import sys
from huggingface_hub import snapshot_download
endpoint, token, repo, revision, folder = sys.argv[1:6]
snapshot_download(repo, revision=revision, endpoint=endpoint, token=token, local_dir=folder)
"""


class Downloads:
    def __init__(self, shards: Shards, server: Server, token: str, scratch: Path) -> None:
        self.shards = shards
        self.server = server
        self.token = token
        self.scratch = scratch
        self.endpoint = f"http://{HOST}:{server.port}"
        self.runs = {
            name: Run(name, checks)
            for name, checks in (
                ("weightgate download", "sha256 + signature"),
                ("huggingface_hub + sha256 after", "sha256 (after)"),
                ("curl x8 + sha256 after", "sha256 (after)"),
                ("huggingface_hub snapshot_download", "sizes only"),
                ("curl x8", "none"),
            )
        }
        self.counter = 0
        self.env = {
            **os.environ,
            "WEIGHTGATE_ENDPOINT": self.endpoint,
            "WEIGHTGATE_TOKEN": token,
            "WEIGHTGATE_CONFIG": str(scratch / "weightgate.json"),  # no saved login
            "HF_HOME": str(scratch / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        self.env.pop("HF_TOKEN", None)

    def _folder(self, tool: str) -> Path:
        self.counter += 1
        folder = self.scratch / f"{self.counter:02d}-{tool}"
        folder.mkdir()
        return folder

    def _check(self, tool: str, folder: Path, digests: dict[str, str] | None = None) -> None:
        """Untimed: every file there, with the release's bytes."""
        paths = sorted(self.shards.files)
        got = digests or digests_of(folder, paths)
        wrong = [p for p in paths if got.get(p) != self.shards.files[p][1]]
        if wrong:
            raise BenchFailed(f"{tool}: {len(wrong)} files differ from the release: {wrong[:3]}")

    def _run(self, tool: str, argv: list[str]) -> None:
        completed = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        if completed.returncode != 0:
            raise BenchFailed(
                f"{tool} exited with {completed.returncode}:\n{completed.stderr[-2000:]}"
            )

    def weightgate(self) -> None:
        folder = self._folder("weightgate")
        cli = str(Path(sys.executable).with_name("weightgate"))
        started, cpu = time.perf_counter(), _cpu()
        self._run(
            "weightgate download",
            [cli, "download", self.shards.repo_id, "--revision", self.shards.revision]
            + ["--dir", str(folder)],
        )
        self.runs["weightgate download"].seconds.append(time.perf_counter() - started)
        self.runs["weightgate download"].cpu.append(_cpu() - cpu)
        self._check("weightgate download", folder)
        shutil.rmtree(folder)

    def huggingface(self) -> None:
        folder = self._folder("hf")
        started, cpu = time.perf_counter(), _cpu()
        self._run(
            "snapshot_download",
            [sys.executable, "-c", HF_SCRIPT, self.endpoint, self.token]
            + [self.shards.repo_id, self.shards.revision, str(folder)],
        )
        fetched, cpu_fetched = time.perf_counter(), _cpu()
        digests = digests_of(folder, sorted(self.shards.files))
        hashed, cpu_hashed = time.perf_counter(), _cpu()
        self.runs["huggingface_hub snapshot_download"].seconds.append(fetched - started)
        self.runs["huggingface_hub snapshot_download"].cpu.append(cpu_fetched - cpu)
        self.runs["huggingface_hub + sha256 after"].seconds.append(hashed - started)
        self.runs["huggingface_hub + sha256 after"].cpu.append(cpu_hashed - cpu)
        self._check("snapshot_download", folder, digests)
        shutil.rmtree(folder)

    def curl(self) -> None:
        folder = self._folder("curl")
        model = self.shards.repo_id
        started, cpu = time.perf_counter(), _cpu()
        connection = http.client.HTTPConnection(HOST, self.server.port, timeout=30)
        arguments = []
        try:
            for path in sorted(self.shards.files):
                connection.request(
                    "GET",
                    f"/api/v1/models/{model}/versions/{self.shards.revision}/files/{path}",
                    headers={"Authorization": f"Bearer {self.token}", "Prefer": "no-redirect"},
                )
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise BenchFailed(f"no-redirect URL of {path}: {response.status} {body!r}")
                arguments += [str(folder / path), json.loads(body)["url"]]
        finally:
            connection.close()
        # xargs runs CURL_PARALLEL curls at once, each `curl -o FILE URL`.
        completed = subprocess.run(
            ["xargs", "-d", "\n", "-n", "2", "-P", str(CURL_PARALLEL)]
            + ["curl", "--silent", "--show-error", "--fail", "-o"],
            input="\n".join(arguments),
            capture_output=True,
            text=True,
        )
        fetched, cpu_fetched = time.perf_counter(), _cpu()
        if completed.returncode != 0:
            raise BenchFailed(f"curl failed: {completed.stderr[-2000:]}")
        digests = digests_of(folder, sorted(self.shards.files))
        hashed, cpu_hashed = time.perf_counter(), _cpu()
        self.runs["curl x8"].seconds.append(fetched - started)
        self.runs["curl x8"].cpu.append(cpu_fetched - cpu)
        self.runs["curl x8 + sha256 after"].seconds.append(hashed - started)
        self.runs["curl x8 + sha256 after"].cpu.append(cpu_hashed - cpu)
        self._check("curl", folder, digests)
        shutil.rmtree(folder)

    def run(self, rounds: int) -> None:
        tools: list[tuple[str, Callable[[], None]]] = [
            ("weightgate", self.weightgate),
            ("huggingface_hub", self.huggingface),
            ("curl", self.curl),
        ]
        # One untimed round first: a fresh server is slow to start with (a fresh gunicorn took up
        # to 0.6 s to hand out the eight URLs, against 0.1 s later; the first download measured
        # 2.7 s, the same tool's later ones 1.5 s), and the first tool of the first round would
        # pay for all of it.
        print("  warm-up round (untimed)", flush=True)
        for _, tool in tools:
            tool()
        for figures in self.runs.values():
            figures.seconds.clear()
            figures.cpu.clear()
        for round_index in range(rounds):
            shift = round_index % len(tools)
            for name, tool in tools[shift:] + tools[:shift]:
                tool()
                seconds = {
                    "weightgate": self.runs["weightgate download"],
                    "huggingface_hub": self.runs["huggingface_hub snapshot_download"],
                    "curl": self.runs["curl x8"],
                }[name].seconds[-1]
                print(
                    f"  round {round_index + 1}/{rounds}  {name:<16} {seconds:6.2f} s "
                    f"{self.shards.nbytes / seconds / 1e6:8.1f} MB/s",
                    flush=True,
                )
                if not self.server.alive():
                    raise self.server.failed(f"gunicorn died during the {name} download")


def startup_seconds(env: dict[str, str]) -> dict[str, float]:
    """What each tool's process costs before any byte moves: interpreter and imports."""
    commands = {
        "weightgate --help": [str(Path(sys.executable).with_name("weightgate")), "--help"],
        "weightgate imports": [sys.executable, "-c", "import weightgate_cli.download"],
        "python -c 'import huggingface_hub'": [
            sys.executable,
            "-c",
            "import huggingface_hub; huggingface_hub.snapshot_download",
        ],
    }
    seconds = {}
    for label, argv in commands.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        seconds[label] = statistics.median(times)
    return seconds


# --- The driver. -------------------------------------------------------------------------------


@dataclass
class Results:
    small: LoadFigures | None = None
    small_sql: list[str] = field(default_factory=list)
    large: LoadFigures | None = None
    large_sql: list[str] = field(default_factory=list)
    filler: Filler | None = None
    sizes_small: dict[str, tuple[int, str]] = field(default_factory=dict)
    sizes_large: dict[str, tuple[int, str]] = field(default_factory=dict)
    profiles: list[Profiled] = field(default_factory=list)
    shards: Shards | None = None
    downloads: dict[str, Run] = field(default_factory=dict)
    startup: dict[str, float] = field(default_factory=dict)
    seed_seconds: float = 0.0
    staged_deleted: int = 0
    load_started: float = field(default_factory=lambda: os.getloadavg()[0])


def run(params: Params, results: Results) -> None:
    started = time.perf_counter()
    seeded = seed(files=params.files, holders=params.holders, prefix=params.prefix)
    results.seed_seconds = time.perf_counter() - started
    results.sizes_small = table_sizes()
    print(
        f"seeded {params.files} files, {params.holders} grant holders with a token each "
        f"({results.seed_seconds:.1f} s)",
        flush=True,
    )
    env = dict(os.environ)
    with gunicorn_running(env, params.workers, Path(params.scratch) / "gunicorn.log") as server:
        print(f"gunicorn on {HOST}:{server.port}", flush=True)
        if "a" in params.sections:
            results.small, results.small_sql = load_section(seeded, server, params, "(a)")
            if params.profile:
                print(
                    f"(a) profiling {params.profile} requests of each kind in process", flush=True
                )
                results.profiles = profile_in_process(seeded, params.profile)
        if "b" in params.sections:
            print(
                f"(b) inserting {params.grants:,} grants, {params.tokens:,} tokens, "
                f"{params.filler_users:,} users, {params.filler_models:,} models",
                flush=True,
            )
            results.filler = filler_insert(seeded, params)
            results.sizes_large = table_sizes()
            print(
                "    " + ", ".join(f"{k} {v:.1f} s" for k, v in results.filler.seconds.items()),
                flush=True,
            )
            results.large, results.large_sql = load_section(seeded, server, params, "(b)")
        if "c" in params.sections:
            print(
                f"(c) staging {params.shards} x {params.shard_mib} MiB shards and ingesting them",
                flush=True,
            )
            shards = shards_prepare(seeded, params)
            results.shards = shards
            downloads = Downloads(shards, server, seeded.tokens[0], Path(params.scratch) / "dl")
            downloads.scratch.mkdir()
            results.startup = startup_seconds(downloads.env)
            downloads.run(params.download_rounds)
            results.downloads = downloads.runs


# --- Reporting. --------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}"


def load_table(figures: LoadFigures, *, against: LoadFigures | None = None) -> list[str]:
    endpoints = figures.endpoints
    baseline = endpoints[0]
    header = (
        f"{'endpoint':<30}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'SQL':>6}"
        f"{'vs bare':>9}  {'by round':<12}"
    )
    if against is not None:
        header += f"{'small/large':>12}{'vs bare small':>14}"
    lines = [header, "-" * len(header)]
    other = against.by_label() if against is not None else {}
    for endpoint in endpoints:
        by_round = " ".join(
            f"{endpoint.rate(r) / baseline.rate(b):.2f}"
            for r, b in zip(endpoint.rounds, baseline.rounds, strict=True)
        )
        line = (
            f"{endpoint.label:<30}{endpoint.rate():>9.1f}{endpoint.latency_ms(0.50):>8.1f}"
            f"{endpoint.latency_ms(0.99):>8.1f}{int(endpoint.total('errors')):>7}"
            f"{figures.queries.get(endpoint.label, '-'):>6}"
            f"{endpoint.rate() / baseline.rate():>9.2f}  {by_round:<12}"
        )
        if against is not None and endpoint.label in other:
            small = other[endpoint.label]
            line += (
                f"{small.rate() / endpoint.rate():>12.2f}"
                f"{small.rate() / against.endpoints[0].rate():>14.2f}"
            )
        lines.append(line)
    for endpoint in endpoints:
        for sample in sorted({s for r in endpoint.rounds for s in r["error_samples"]}):
            lines.append(f"error on {endpoint.label}: {sample}")
    if figures.log_tail:
        lines.append("gunicorn log, last lines:")
        lines.extend(f"    {line}" for line in figures.log_tail)
    return lines


def report(params: Params, results: Results) -> None:
    from release.distribution import LEASE_UNITS

    out: list[str] = [""]
    say = out.append
    say("Weightgate downloads: authorised resolve requests next to a bare Django view, and")
    say("whole-model downloads next to huggingface_hub and curl")
    say(
        f"  server   gunicorn config.wsgi (infra/gunicorn.conf.py: gthread, 4 threads), "
        f"{params.workers} workers, DEBUG=0, access log to /dev/null, loopback; rate limit and "
        f"daily quota raised to {UNTHROTTLED:,} (still counted: units drawn from Redis "
        f"{LEASE_UNITS} at a time per worker, and every GET logged there)"
    )
    say(
        f"  load     {params.connections} keep-alive HTTP/1.1 connections from one separate "
        f"process (asyncio, bench/catalog_api.py); connection i sends token i mod "
        f"{params.holders} and walks the {params.files} files from file i"
    )
    say(
        f"  timing   {params.warmup:g} s warm-up + {params.duration:g} s per measurement, "
        f"{params.rounds} rounds (order reversed every other round)"
    )
    say(
        f"  data     model {ORG}/{RESOLVE_MODEL}@{VERSION}: 1 gated artifact, {params.files} files "
        f"(rows); {params.holders} users with a grant and a token each; presigned URLs cached "
        f"per worker process for a tenth of their lifetime: at most {params.files} presigns "
        f"per worker, then cache hits"
    )
    say(
        "  caches   tokens, grants, artifact phases, blob locations and file rows are remembered "
        "per worker (licensing.read_cache) until a write anywhere is announced (each worker "
        "looks once a second; the bench writes nothing meanwhile) or for a minute; SQL column: "
        "queries of one request with nothing remembered / with everything remembered"
    )
    say(
        f"  machine  {os.cpu_count()} CPUs, {platform.platform(terse=True)}, Python "
        f"{platform.python_version()}, load average {results.load_started:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (the load generator, gunicorn, PostgreSQL, Redis "
        "and the object store share these cores, with whatever else runs on the machine)"
    )
    say(f"  database {params.database}, Redis db {params.redis_db}, run {params.run_id}")

    if results.small is not None:
        say("")
        say("(a) small database " + _sizes(results.sizes_small))
        out.extend(load_table(results.small))
        resolve = results.small.by_label()["Hub resolve"]
        bare = results.small.endpoints[0]
        ratio = resolve.rate() / bare.rate()
        say(f"    goal: Hub resolve >= 0.60 x bare view; measured {ratio:.2f}")
    if results.large is not None and results.filler is not None:
        filler = results.filler
        say("")
        say(
            f"(b) large database: + {filler.grants:,} grants ({filler.grants_on_bench_model:,} on "
            f"the bench model, 1 in 20 revoked, 1 in 10 expiring; token column a fixed "
            f"placeholder '{FILLER_JWS}', never verified), {filler.tokens:,} tokens, "
            f"{filler.users:,} users, {filler.models:,} models"
        )
        say(
            "    inserted with COPY in "
            + ", ".join(f"{k} {v:.1f} s" for k, v in filler.seconds.items())
            + f" (total {sum(filler.seconds.values()):.1f} s)"
        )
        say("    " + _sizes(results.sizes_large))
        out.extend(load_table(results.large, against=results.small))
        if results.small is not None:
            small = results.small.by_label()["Hub resolve"].rate()
            large = results.large.by_label()["Hub resolve"].rate()
            small_bare = small / results.small.endpoints[0].rate()
            large_bare = large / results.large.endpoints[0].rate()
            say(
                f"    goal: Hub resolve on the large database within 1.2x of the small one; "
                f"measured {small / large:.2f}x in req/s, {small_bare / large_bare:.2f}x in "
                "'vs bare' (which the machine's load, changing between (a) and (b), moves less)"
            )
        if results.large_sql:
            say("    the resolve request's SQL and its plans on the large database:")
            out.extend(results.large_sql)

    if results.profiles:
        say("")
        say(
            f"where a request's time goes: {results.profiles[0].count} requests of each kind in "
            "one process through Django's test client and the whole middleware stack, timed, "
            "then as many under cProfile (CPU ms per request; the profiler inflates everything). "
            "Redis round trips: for the units of the rate limit and quota, drawn 32 at a time, "
            "and a GET's log entry"
        )
        header = f"{'':<48}" + "".join(f"{p.label:>24}" for p in results.profiles)
        say(header)
        say("-" * len(header))
        rows: list[tuple[str, Callable[[Profiled], str]]] = [
            ("wall ms per request, no profiler", lambda p: f"{p.wall_ms:.3f}"),
            ("CPU ms per request, no profiler", lambda p: f"{p.cpu_ms:.3f}"),
            ("CPU ms per request, profiled", lambda p: f"{p.profiled_cpu_ms:.3f}"),
            ("Redis round trips per request", lambda p: f"{p.redis_round_trips:.1f}"),
        ]
        for title, cell in rows:
            say(f"{title:<48}" + "".join(f"{cell(p):>24}" for p in results.profiles))
        names = [what for what, _, _ in BUCKETS]
        for what in names:
            cells = []
            for profiled in results.profiles:
                match = [ms for label, ms in profiled.buckets if label.startswith(what + " [")]
                calls = [
                    label.rsplit("[", 1)[1].rstrip("]")
                    for label, _ in profiled.buckets
                    if label.startswith(what + " [")
                ]
                cells.append(f"{match[0]:.3f} ({calls[0]})" if match else "-")
            say(f"{what:<48}" + "".join(f"{c:>24}" for c in cells))
        if results.small_sql:
            say("  the resolve request's SQL (small database) and plans:")
            out.extend(results.small_sql)

    if results.shards is not None and results.downloads:
        shards = results.shards
        nbytes = shards.nbytes
        say("")
        say(
            f"(c) downloads of {shards.repo_id}@{shards.revision}: {len(shards.files)} gated "
            f"safetensors shards, {nbytes / MiB:.0f} MiB ({nbytes / 1e6:.0f} MB) of random bytes "
            f"in the staging bucket (staged in {shards.staged_seconds:.1f} s, ingested in "
            f"{shards.ingest_seconds:.1f} s); each tool in its own process, a fresh directory "
            f"each time, {params.download_rounds} rounds (order rotated) after an untimed one; a "
            "grant holder's token"
        )
        say(
            "    weightgate: defaults (8 workers; files above 64 MiB split only as far as it keeps "
            "every connection busy; whole pages written with O_DIRECT); "
            "huggingface_hub "
            f"2.4.0: snapshot_download(local_dir=...), 8 workers; curl: {CURL_PARALLEL} at once "
            "via xargs -P on URLs fetched with Prefer: no-redirect (timed from the first URL "
            "request); 'sha256 after' = hashlib over the files on every core once they are in"
        )
        verified = [
            r for r in results.downloads.values() if r.checks != "none" and "sizes" not in r.checks
        ]
        best_verified = min(r.median() for r in verified)
        best = min(r.median() for r in results.downloads.values())
        header = (
            f"{'tool':<36}{'checks':<20}{'median s':>9}{'MB/s':>7}{'CPU s':>7}"
            f"{'vs best verified':>18}{'vs best':>9}  rounds s"
        )
        say(header)
        say("-" * len(header))
        for result in results.downloads.values():
            median = result.median()
            cpu = statistics.median(result.cpu) if result.cpu else math.nan
            say(
                f"{result.tool:<36}{result.checks:<20}{median:>9.2f}{nbytes / median / 1e6:>7.0f}"
                f"{cpu:>7.2f}{median / best_verified:>18.2f}{median / best:>9.2f}  "
                + " ".join(f"{s:.2f}" for s in result.seconds)
            )
        say(
            "    CPU s: CPU seconds of the tool's own processes (user + system), and of the "
            "sha256 pass in this process; the object store's CPU is not counted"
        )
        weightgate = results.downloads["weightgate download"].median()
        others = [r.median() for r in verified if r.tool != "weightgate download"]
        say(
            f"    goal: weightgate no slower than the best other tool with verification on; "
            f"measured {weightgate / min(others):.2f}x its time"
        )
        if results.startup:
            say(
                "    process start-up (median of 3): "
                + ", ".join(f"{k} {v:.2f} s" for k, v in results.startup.items())
            )
    print("\n".join(out), flush=True)


def _sizes(sizes: dict[str, tuple[int, str]]) -> str:
    return "(" + ", ".join(f"{t} {n:,} rows {s}" for t, (n, s) in sizes.items()) + ")"


def profile_dump(results: Results, path: Path) -> None:
    path.write_text("\n\n".join(f"== {p.label} ==\n{p.text}" for p in results.profiles))


def driver_main(params_json: str) -> int:
    """The bench on the bench database, in a child process whose environment names it."""
    import django

    django.setup()
    params = Params(**json.loads(params_json))
    results = Results()
    failed = False
    try:
        run(params, results)
    except (BenchFailed, ServerFailed) as failure:
        print(f"bench failed: {failure}", file=sys.stderr)
        failed = True
    finally:
        results.staged_deleted = staged_delete(params.prefix)
    report(params, results)
    if results.profiles:
        dump = Path(params.scratch).parent / f"weightgate-bench-downloads-{params.run_id}.prof.txt"
        profile_dump(results, dump)
        print(f"\nfull cProfile listings: {dump}")
    print(
        f"cleanup: gunicorn stopped, {results.staged_deleted} staged objects deleted; the "
        "database and the Redis db go next"
    )
    errors = any(
        e.total("errors")
        for figures in (results.small, results.large)
        if figures is not None
        for e in figures.endpoints
    )
    return 1 if failed or errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument("--duration", type=float, help="seconds measured per endpoint and round")
    parser.add_argument("--warmup", type=float, help="seconds of unrecorded load before each")
    parser.add_argument("--rounds", type=int, help="measurements of every endpoint")
    parser.add_argument("--connections", type=int, default=32, help="client connections (32)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--files", type=int, default=50, help="files of the resolve model (50)")
    parser.add_argument(
        "--holders", type=int, default=32, help="grant holders, one token each (default 32)"
    )
    parser.add_argument("--grants", type=int, help="filler grants for (b) (default 1,000,000)")
    parser.add_argument("--tokens", type=int, help="filler tokens for (b) (default 100,000)")
    parser.add_argument("--filler-users", type=int, help="users the filler is spread over")
    parser.add_argument("--filler-models", type=int, help="models the filler is spread over")
    parser.add_argument("--shards", type=int, help="shards downloaded in (c) (default 8)")
    parser.add_argument("--shard-mib", type=int, help="MiB per shard (default 64)")
    parser.add_argument("--download-rounds", type=int, help="downloads per tool (default 2)")
    parser.add_argument(
        "--profile", type=int, help="requests of each kind under cProfile (default 2000; 0: none)"
    )
    parser.add_argument(
        "--sections", default="abc", help="which of a, b, c to run (default abc; b needs a)"
    )
    parser.add_argument(
        "--database", help="throwaway database, dropped and created (default: one per run)"
    )
    args = parser.parse_args(argv)
    values = {**(QUICK if args.quick else DEFAULTS)}
    for name in values:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if min(args.connections, args.workers, args.files, args.holders, values["rounds"]) < 1:
        parser.error("--connections, --workers, --files, --holders and --rounds must be positive")
    if min(values["shards"], values["shard_mib"], values["download_rounds"]) < 1:
        parser.error("--shards, --shard-mib and --download-rounds must be positive")
    if min(values["grants"], values["tokens"], values["profile"]) < 0:
        parser.error("--grants, --tokens and --profile must not be negative")
    if min(values["filler_users"], values["filler_models"]) < 1:
        parser.error("--filler-users and --filler-models must be positive")
    sections = "".join(sorted(set(args.sections)))
    if not sections or set(sections) - set("abc") or ("b" in sections and "a" not in sections):
        parser.error("--sections takes a, b and c; b needs a")

    from config.settings import env_str  # also reads .local/env, like every other entry point

    run_id = secrets.token_hex(4)
    database = args.database or f"weightgate_bench_downloads_{run_id}"
    started = time.perf_counter()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="weightgate-bench-downloads-") as scratch,
            bench_database(env_str("DATABASE_URL"), database) as database_url,
            redis_database(env_str("REDIS_URL"), run_id) as (redis_url, redis_db),
        ):
            params = Params(
                run_id=run_id,
                database=database,
                redis_db=redis_db,
                connections=args.connections,
                workers=args.workers,
                files=args.files,
                holders=args.holders,
                sections=sections,
                scratch=scratch,
                **values,
            )
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "CELERY_BROKER_URL": redis_url,
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DEBUG": "0",
                "DOWNLOAD_RATE_PER_MINUTE": str(UNTHROTTLED),
                "DOWNLOAD_DAILY_QUOTA": str(UNTHROTTLED),
            }
            print(f"migrating database {database}; Redis db {redis_db}", flush=True)
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
                cwd=PROJECT_ROOT,
                env=env,
                check=True,
            )
            driver = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from bench.downloads import driver_main; "
                    "sys.exit(driver_main(sys.argv[1]))",
                    json.dumps(asdict(params)),
                ],
                cwd=PROJECT_ROOT,
                env=env,
            )
    except KeyboardInterrupt:
        print("interrupted; server stopped, database dropped, Redis db emptied", file=sys.stderr)
        return 130
    print(
        f"cleanup: database {database} dropped, Redis db {redis_db} emptied; "
        f"total {time.perf_counter() - started:.0f} s"
    )
    return driver.returncode


if __name__ == "__main__":
    sys.exit(main())
