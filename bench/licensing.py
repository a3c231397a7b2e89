"""A launch-day surge of access requests, a bulk manual approval and offline grant checks, each
next to the raw ECDSA work it cannot go below, measured in the same run.

Run from the project root (`.venv/bin/python bench/licensing.py --help`; `--quick` for a smoke
run). It creates a throwaway database next to DATABASE_URL's (the demo data is never touched)
and a Celery queue of its own, then, in a child process whose DATABASE_URL names that database,
seeds gated models (a published license, a form with a country and a required checkbox), a
grants signing key and one user with a session per request, and measures:

(a) the surge: every user POSTs .../access-requests/ once, through gunicorn as configured in
    infra/gunicorn.conf.py, from a separate asyncio process over concurrent keep-alive
    connections, with their session cookie and CSRF token. The gate approves at once, so each
    201 is a request, its approval and a signed grant. Timed from the first request to the last
    answer, and compared with the raw signing loop: as many ES256 JWS of a grant's claims signed
    with PyJWT on the same key, decrypted once.
(b) the bulk approval: as many pending requests of a manually reviewed model (bulk_create), all
    approved by one access_requests_handle call in this process (what the handle API and the
    admin action run, without HTTP), next to the raw signing loop again.
(c) offline checks: grant_verify_offline with the JWKS served by the server and a signed list of
    revoked ids, next to cryptography's bare ECDSA P-256 verify of the same grants.

No worker consumes the bench's queue: the emails and webhooks queued on commit are deleted at
the end, with the database. Figures only: nothing here asserts on timings. The exit status is
non-zero only when something failed (the server died, more than a handful of requests got no
answer or one other than 201, a grant is missing or does not verify).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import math
import os
import platform
import pstats
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on the path, and this file would shadow the licensing app.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PROJECT_ROOT / "bench"]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from licensing.models import License, SigningKey
    from release.models import Model

QUICK: dict[str, Any] = {"count": 1000, "verify_seconds": 0.5}
DEFAULTS: dict[str, Any] = {"count": 10_000, "verify_seconds": 2.0}
# More failed requests than this make the run fail; fewer are printed, and tolerated.
HANDFUL = 5
SAMPLE_INTERVAL = 0.05

LICENSE_TEXT = "Bench Community License\n\n" + "You may use these weights as agreed. " * 200
FORM_FIELDS = [
    {"name": "country", "label": "Country", "type": "country", "required": True},
    {
        "name": "accept_aup",
        "label": "I accept the acceptable use policy",
        "type": "checkbox",
        "required": True,
    },
]
COUNTRIES = ("FR", "DE", "US", "JP", "BR", "IN", "NG", "CA", "KR", "MX")
ORG = "bench"
# The surge's model, the bulk approval's, and two on the side for the warm-up, query counts and
# profiles, so that the measured models hold exactly the measured requests.
LAUNCH, REVIEW, SIDE_AUTO, SIDE_MANUAL = "launch", "review", "side-auto", "side-manual"
AUTO_MODELS = (LAUNCH, SIDE_AUTO)


def answers(index: int) -> dict[str, Any]:
    return {"country": COUNTRIES[index % len(COUNTRIES)], "accept_aup": True}


def requests_path(name: str, org: str = ORG) -> str:
    return f"/api/v1/models/{org}/{name}/access-requests/"


@dataclass
class Params:
    run_id: str
    queue: str
    count: int
    connections: int
    workers: int
    revoked: int
    verify_seconds: float
    rounds: int
    profile: int
    log_dir: str

    @property
    def warmup(self) -> int:
        return 2 * self.connections


# --- Load generator: runs in a separate process. ---------------------------------------------


class SurgeResult(TypedDict):
    seconds: float
    statuses: dict[int, int]
    transport_errors: int
    samples: list[str]
    latencies: list[float]
    connects: int
    cpu_seconds: float


async def _surge(port: int, requests: list[bytes], connections: int) -> SurgeResult:
    from bench.catalog_api import TRANSPORT_ERRORS, Connection

    waiting = deque(requests)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    samples: list[str] = []
    tally = {"transport_errors": 0, "connects": 0}

    def sample(what: str) -> None:
        if len(samples) < HANDFUL:
            samples.append(what)

    async def client() -> None:
        connection = Connection(port)
        try:
            while waiting:
                request = waiting.popleft()
                started = time.perf_counter()
                try:
                    status, body = await connection.exchange(request)
                except TRANSPORT_ERRORS as error:
                    tally["transport_errors"] += 1
                    sample(f"{type(error).__name__}: {error}")
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
                if status != 201:
                    sample(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        finally:
            connection.close()
            tally["connects"] += connection.connects

    started, cpu_started = time.perf_counter(), time.process_time()
    outcomes = await asyncio.gather(*(client() for _ in range(connections)), return_exceptions=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            tally["transport_errors"] += 1
            sample(f"client crashed: {type(outcome).__name__}: {outcome}")
    return SurgeResult(
        seconds=seconds,
        statuses=dict(statuses),
        samples=samples,
        latencies=latencies,
        cpu_seconds=cpu_seconds,
        transport_errors=tally["transport_errors"],
        connects=tally["connects"],
    )


def surge_run(port: int, requests: list[bytes], connections: int) -> SurgeResult:
    """Send every request once over `connections` concurrent HTTP/1.1 keep-alive connections,
    each taking the next waiting request as soon as it has its answer (a closed loop)."""
    return asyncio.run(_surge(port, requests, connections))


# --- CPU accounting (Linux /proc; None elsewhere). -------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        # After the parenthesised command name: state, ppid, ..., utime (12th), stime (13th).
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int) -> float | None:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else None


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def machine_ticks() -> tuple[int, int] | None:
    """Busy and total jiffies of the whole machine."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


def cores_busy(since: tuple[int, int] | None) -> float | None:
    now = machine_ticks()
    if since is None or now is None or now[1] == since[1]:
        return None
    return (now[0] - since[0]) / (now[1] - since[1]) * (os.cpu_count() or 1)


# The bench database's client backends, what each is doing, and whether it holds an advisory
# lock: audit_record's pg_advisory_xact_lock is the only advisory lock the code takes.
_BACKENDS_SQL = """
SELECT a.pid, a.state, a.wait_event_type, a.wait_event,
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
"""


@dataclass
class Sampler:
    """Polls pg_stat_activity and pg_locks on a thread of its own during the surge: how often the
    audit lock is held, by a backend doing what, how many wait for it, and the CPU time of every
    backend seen (connections are recycled after CONN_MAX_AGE, so their pids change)."""

    samples: int = 0
    held: int = 0
    holder_idle: int = 0  # the holder waits for its web thread (Python work inside the lock)
    audit_waiting: int = 0  # summed over samples: backends waiting for the audit lock
    other_waiting: int = 0  # row locks and the like
    running: int = 0
    idle_in_transaction: int = 0
    cpu_first: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        from django.db import connection

        try:
            with connection.cursor() as cursor:
                while not self._stop.wait(SAMPLE_INTERVAL):
                    cursor.execute(_BACKENDS_SQL)
                    self._count(cursor.fetchall())
        except Exception as error:  # reported, never fatal: the surge is what is measured
            self.error = f"{type(error).__name__}: {error}"
        finally:
            connection.close()

    def _count(self, rows: Iterable[tuple[Any, ...]]) -> None:
        first = self.samples == 0
        self.samples += 1
        for pid, state, wait_type, wait_event, holds in rows:
            if holds:
                self.held += 1
                self.holder_idle += state == "idle in transaction"
            if wait_type == "Lock":
                if wait_event == "advisory":
                    self.audit_waiting += 1
                else:
                    self.other_waiting += 1
            elif state == "active":
                self.running += 1
            elif state == "idle in transaction":
                self.idle_in_transaction += 1
            cpu = process_cpu(pid)
            if cpu is not None:
                # A backend first seen after the start is a new connection: it starts from 0.
                self.cpu_first.setdefault(pid, cpu if first else 0.0)
                self.cpu_last[pid] = cpu

    def cpu_seconds(self) -> float | None:
        if not self.cpu_last:
            return None
        return sum(self.cpu_last[pid] - self.cpu_first[pid] for pid in self.cpu_last)

    def mean(self, total: int) -> float:
        return total / self.samples if self.samples else math.nan


# --- Results. ----------------------------------------------------------------------------------


@dataclass
class SurgeFigures:
    result: SurgeResult
    grants: int = 0
    verified: int = 0
    server_cpu: float | None = None
    postgres_cpu: float | None = None
    cores_busy: float | None = None
    sampler: Sampler | None = None

    @property
    def created(self) -> int:
        return self.result["statuses"].get(201, 0)

    @property
    def failed(self) -> int:
        sent = sum(self.result["statuses"].values())
        return sent - self.created + self.result["transport_errors"]

    def latency_ms(self, fraction: float) -> float:
        from bench.catalog_api import percentile_ms

        return percentile_ms(self.result["latencies"], fraction)


@dataclass
class ApprovalFigures:
    seconds: float
    handled: int
    refused: dict[int, str]
    grants: int
    python_cpu: float
    postgres_cpu: float | None


@dataclass
class Results:
    raw_signing: list[float] = field(default_factory=list)  # seconds per loop, before (a), (b)
    costs_us: dict[str, float] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    surge: SurgeFigures | None = None
    approval: ApprovalFigures | None = None
    verify_rates: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    seed_seconds: float = 0.0
    load_average: float | None = None  # of the machine when the run began: others' work too


class BenchFailed(Exception):
    pass


# --- Seeding. -----------------------------------------------------------------------------------


@dataclass
class Seeded:
    staff: User
    license: License
    key: SigningKey
    models: dict[str, Model]
    users: list[User]
    sessions: list[str]


def seed(params: Params) -> Seeded:
    """The models, their gates, the grants key, the users and a logged-in session for each, made
    in bulk where the services would take minutes (users, sessions); the rest by the services."""
    from licensing.access import gate_policy_set, license_publish
    from licensing.keys import signing_key_ensure
    from licensing.models import GatePolicy, License
    from release.models import Phase
    from tests.factories import make_release, make_user

    staff = make_user("bench-staff", is_staff=True)
    key = signing_key_ensure(purpose="grants")
    license = license_publish(
        actor=staff,
        license=License.objects.create(
            slug="bench-community",
            version="1.0",
            title="Bench Community License",
            text=LICENSE_TEXT,
        ),
    )
    models = {}
    for name in (LAUNCH, REVIEW, SIDE_AUTO, SIDE_MANUAL):
        model = make_release(org=ORG, name=name, artifacts={"weights": Phase.GATED}).model
        mode = GatePolicy.Mode.AUTO if name in AUTO_MODELS else GatePolicy.Mode.MANUAL
        gate_policy_set(
            actor=staff, model=model, license=license, approval_mode=mode, form_fields=FORM_FIELDS
        )
        models[name] = model

    # The surge's users, the warm-up's, and one for the query counts.
    users, sessions = users_with_sessions(params.count + params.warmup + 1)
    return Seeded(staff, license, key, models, users, sessions)


def users_with_sessions(count: int, *, prefix: str = "bench") -> tuple[list[User], list[str]]:
    """`count` users (named prefix-000000 on) and a signed-in session key for each, made in bulk
    (the services would take minutes): what django.contrib.auth.login() stores, without a request
    and a query per user."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.base import VALID_KEY_CHARS
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    users = User.objects.bulk_create(
        (
            User(
                username=f"{prefix}-{index:06d}",
                email=f"{prefix}-{index:06d}@example.com",
                password=make_password(None),  # unusable, and free to make (no PBKDF2)
            )
            for index in range(count)
        ),
        batch_size=2000,
    )
    backend = settings.AUTHENTICATION_BACKENDS[0]
    store = SessionStore()
    expires = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    sessions = [get_random_string(32, VALID_KEY_CHARS) for _ in users]
    Session.objects.bulk_create(
        (
            Session(
                session_key=session,
                session_data=store.encode(
                    {
                        SESSION_KEY: str(user.pk),
                        BACKEND_SESSION_KEY: backend,
                        HASH_SESSION_KEY: user.get_session_auth_hash(),
                    }
                ),
                expire_date=expires,
            )
            for user, session in zip(users, sessions, strict=True)
        ),
        batch_size=2000,
    )
    return users, sessions


def routing_check(queue: str) -> None:
    """Every task the services queue goes to the bench's queue (the child's environment sets
    CELERY_TASK_DEFAULT_QUEUE); a stray one would reach another worker on the machine, which
    would look the ids up in its own database."""
    from config.celery import app

    for task in app.tasks:
        if task.startswith(("licensing.", "release.")):
            routed = app.amqp.router.route({}, task)["queue"].name
            if routed != queue:
                raise BenchFailed(f"{task} would go to queue {routed!r}, not {queue!r}")


def queue_delete(queue: str) -> int:
    """Delete the bench queue's messages and kombu's bookkeeping of it; how many messages."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        messages = 0
        for key in client.scan_iter(match=f"*{queue}*"):  # the run id makes the name unique
            if client.type(key) == b"list":
                messages += int(client.llen(key))
            client.delete(key)
        return messages
    finally:
        client.close()


# --- Measurements in this process. -------------------------------------------------------------


def _grant_claims(index: int, license: License) -> dict[str, Any]:
    from django.conf import settings

    return {
        "iss": settings.SITE_URL,
        "sub": str(index + 1),
        "jti": str(uuid.uuid4()),
        "iat": int(time.time()),
        "model": f"{ORG}/{LAUNCH}",
        "artifacts": ["*"],
        "license": {"id": license.slug, "version": license.version, "sha256": license.text_sha256},
    }


def raw_signing_seconds(*, key: SigningKey, license: License, count: int) -> float:
    """`count` ES256 JWS of a grant's claims with PyJWT, the private key decrypted once: what
    signing grants costs with nothing else around it."""
    import jwt

    from licensing.grants import GRANT_TYPE
    from licensing.keys import signing_key_private

    private_key = signing_key_private(key)
    headers = {"kid": key.kid, "typ": GRANT_TYPE}
    started = time.perf_counter()
    for index in range(count):
        jwt.encode(
            _grant_claims(index, license), private_key, algorithm=key.algorithm, headers=headers
        )
    return time.perf_counter() - started


def _per_call_us(function: Callable[[], object], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1e6


def signing_costs(*, key: SigningKey, license: License, repeats: int = 1000) -> dict[str, float]:
    """Microseconds per call of what a grant's signature is made of."""
    import jwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.utils import timezone

    from licensing.grants import GRANT_TYPE, grant_token
    from licensing.keys import signing_key_private

    private_key = signing_key_private(key)
    claims = _grant_claims(0, license)
    now = timezone.now()
    return {
        "ECDSA P-256 sign (cryptography)": _per_call_us(
            lambda: private_key.sign(b"x" * 400, ec.ECDSA(hashes.SHA256())), repeats
        ),
        "jwt.encode, key already loaded": _per_call_us(
            lambda: jwt.encode(
                claims,
                private_key,
                algorithm=key.algorithm,
                headers={"kid": key.kid, "typ": GRANT_TYPE},
            ),
            repeats,
        ),
        "signing_key_private (decrypt, load, check)": _per_call_us(
            lambda: signing_key_private(key), repeats
        ),
        "grant_token (what _grant_issue calls)": _per_call_us(
            lambda: grant_token(
                key=key,
                issuer="http://bench",
                grant_id=str(uuid.uuid4()),
                user_id=1,
                model=f"{ORG}/{LAUNCH}",
                artifacts=["*"],
                license_id=license.slug,
                license_version=license.version,
                license_sha256=license.text_sha256,
                issued_at=now,
                expires_at=None,
            ),
            repeats,
        ),
    }


def _client() -> Any:
    """Django's test client, its middleware loaded (WhiteNoise scans the static files then)."""
    from django.test import Client

    from bench.catalog_api import HOST

    client = Client(HTTP_HOST=HOST)
    client.get("/healthz")
    return client


def _submit_in_process(client: Any, seeded: Seeded, index: int) -> None:
    """users[index] submits to the side model with auto approval, as a signed-in user."""
    from django.conf import settings

    client.cookies[settings.SESSION_COOKIE_NAME] = seeded.sessions[index]
    response = client.post(
        requests_path(SIDE_AUTO),
        data={"license_sha256": seeded.license.text_sha256, "answers": answers(index)},
        content_type="application/json",
        headers={"accept": "application/json"},
    )
    if response.status_code != 201:
        raise BenchFailed(
            f"in-process submit answered {response.status_code}: {response.content!r}"
        )


def _pending(seeded: Seeded, model_name: str, users: Sequence[User]) -> list[int]:
    from licensing.models import AccessRequest

    license = seeded.license
    created = AccessRequest.objects.bulk_create(
        (
            AccessRequest(
                user=user,
                model=seeded.models[model_name],
                license=license,
                license_sha256=license.text_sha256,
                answers=answers(index),
                ip="127.0.0.1",
                user_agent="weightgate-bench",
            )
            for index, user in enumerate(users)
        ),
        batch_size=2000,
    )
    return [request.pk for request in created]


def _approve(seeded: Seeded, model_name: str, ids: list[int]) -> tuple[list[int], dict[int, str]]:
    from licensing.access import access_requests_handle

    return access_requests_handle(
        model=seeded.models[model_name], ids=ids, status="approved", reviewer=seeded.staff
    )


def query_counts(seeded: Seeded, *, show: bool) -> tuple[dict[str, int], dict[str, str]]:
    """SQL queries of one submit through the whole middleware stack (Django's test client: no
    CSRF check, no HTTP), and of one approval by access_requests_handle."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = _client()
    with CaptureQueriesContext(connection) as submit:
        _submit_in_process(client, seeded, len(seeded.users) - 1)
    ids = _pending(seeded, SIDE_MANUAL, seeded.users[-1:])
    with CaptureQueriesContext(connection) as approve:
        _approve(seeded, SIDE_MANUAL, ids)
    listings = {}
    if show:
        for label, captured in (("submit", submit), ("approval", approve)):
            listings[f"SQL of one {label}"] = "\n".join(
                f"  {index:2d}. {query['sql'][:150]}"
                for index, query in enumerate(captured.captured_queries, 1)
            )
    return {"submit": len(submit), "approval": len(approve)}, listings


def profile_in_process(seeded: Seeded, count: int) -> dict[str, str]:
    """Submits (test client, whole middleware stack, one thread) and approvals (one handle call)
    on the side models: `count` of each timed, then `count` more under cProfile."""
    client = _client()
    plain, profiled = range(count), range(count, 2 * count)
    pending = {
        part: _pending(seeded, SIDE_MANUAL, [seeded.users[i] for i in part])
        for part in (plain, profiled)
    }

    def submits(part: range) -> None:
        for index in part:
            _submit_in_process(client, seeded, index)

    printed = {}
    for label, work in (
        ("submits (auto approval)", submits),
        ("approvals in one handle call", lambda part: _approve(seeded, SIDE_MANUAL, pending[part])),
    ):
        started, cpu_started = time.perf_counter(), time.process_time()
        work(plain)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        # CPU time, not wall time: on a shared machine, waits for a core would blur the picture.
        profiler = cProfile.Profile(time.process_time)
        profiler.runcall(work, profiled)
        out = io.StringIO(
            f"without the profiler: {1000 * seconds / count:.2f} ms per item, "
            f"{1000 * cpu / count:.2f} ms CPU in this process; profiled below: CPU seconds\n"
        )
        out.seek(0, io.SEEK_END)
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
        printed[f"{count} {label}"] = out.getvalue()
    return printed


def verify_rates(
    *, tokens: list[str], jwks: dict[str, Any], revocations: dict[str, str], params: Params
) -> dict[str, list[float]]:
    """Checks per second, each way in turn for `verify_seconds`, `rounds` times (the order
    reversed every other round)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.utils import timezone
    from jwt.algorithms import ECAlgorithm
    from jwt.utils import base64url_decode, raw_to_der_signature

    from licensing.grants import grant_verify_offline

    public_key = ECAlgorithm.from_jwk(json.dumps(jwks["keys"][0]))
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise BenchFailed("the JWKS's first key is not an ECDSA public key")
    signed = []
    for token in tokens:
        signing_input, _, signature = token.rpartition(".")
        der = raw_to_der_signature(base64url_decode(signature), public_key.curve)
        signed.append((signing_input.encode(), der))
    now = timezone.now()
    failures: list[str] = []

    def raw(index: int) -> None:
        message, der = signed[index % len(signed)]
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))

    def offline(revocation_list: str) -> Callable[[int], None]:
        def check(index: int) -> None:
            outcome = grant_verify_offline(
                tokens[index % len(tokens)], jwks=jwks, revocations=revocation_list, now=now
            )
            if not outcome.valid and len(failures) < HANDFUL:
                failures.append(outcome.reason)

        return check

    ways: dict[str, Callable[[int], None]] = {"raw": raw}
    ways.update({label: offline(listing) for label, listing in revocations.items()})
    rates: dict[str, list[float]] = {label: [] for label in ways}
    for round_index in range(params.rounds):
        order = list(ways.items())
        for label, way in order if round_index % 2 == 0 else order[::-1]:
            done, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < params.verify_seconds:
                way(done)
                done += 1
            rates[label].append(done / elapsed)
    if failures:
        raise BenchFailed(f"grant_verify_offline refused valid grants: {failures}")
    return rates


# --- The run. ---------------------------------------------------------------------------------


def access_request_bytes(
    *, port: int, path: str, license_sha256: str, sessions: Sequence[str], users: Iterable[int]
) -> list[bytes]:
    """One POST of an access request to `path` per index of `users`: that user's session cookie,
    a CSRF cookie and the same value in the CSRF header (what a browser sends), the license's
    hash and the form's answers."""
    from django.conf import settings

    from bench.catalog_api import HOST

    csrf_header = settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-")
    built = []
    for index in users:
        body = json.dumps({"license_sha256": license_sha256, "answers": answers(index)}).encode()
        csrf = secrets.token_hex(16)  # 32 alphanumeric characters: a CSRF secret Django takes
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Accept: application/json\r\nContent-Type: application/json\r\n"
            "User-Agent: weightgate-bench\r\n"
            f"Cookie: {settings.SESSION_COOKIE_NAME}={sessions[index]}; "
            f"{settings.CSRF_COOKIE_NAME}={csrf}\r\n{csrf_header}: {csrf}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        built.append(head.encode() + body)
    return built


def _surge_requests(seeded: Seeded, users: range, model_name: str, port: int) -> list[bytes]:
    return access_request_bytes(
        port=port,
        path=requests_path(model_name),
        license_sha256=seeded.license.text_sha256,
        sessions=seeded.sessions,
        users=users,
    )


def surge(seeded: Seeded, params: Params, results: Results) -> dict[str, Any]:
    """(a) on a real server; returns the JWKS the server publishes."""
    import multiprocessing

    from bench.catalog_api import gunicorn_running, http_get

    log = Path(params.log_dir) / "gunicorn.log"
    spawn = multiprocessing.get_context("spawn")
    with (
        gunicorn_running(dict(os.environ), params.workers, log) as server,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as load_process,
    ):
        warm = range(params.count, params.count + params.warmup)
        warmed = load_process.submit(
            surge_run,
            server.port,
            _surge_requests(seeded, warm, SIDE_AUTO, server.port),
            params.connections,
        ).result()
        if warmed["statuses"] != {201: params.warmup}:
            raise server.failed(
                f"warm-up: {warmed['statuses']} {warmed['transport_errors']} transport errors, "
                f"e.g. {warmed['samples']}"
            )
        requests = _surge_requests(seeded, range(params.count), LAUNCH, server.port)
        workers = children(server.process.pid)
        sampler = Sampler()
        print(f"(a) surge: {params.count} requests to gunicorn on port {server.port}", flush=True)
        cpu_before = [process_cpu(pid) for pid in workers]
        ticks = machine_ticks()
        sampler.start()
        try:
            result = load_process.submit(
                surge_run, server.port, requests, params.connections
            ).result()
        finally:
            sampler.stop()
        figures = SurgeFigures(result=result, sampler=sampler, cores_busy=cores_busy(ticks))
        cpu_after = [process_cpu(pid) for pid in workers]
        if None not in cpu_before and None not in cpu_after:
            figures.server_cpu = sum(a or 0.0 for a in cpu_after) - sum(
                b or 0.0 for b in cpu_before
            )
        figures.postgres_cpu = sampler.cpu_seconds()
        results.surge = figures
        if not server.alive():
            raise server.failed("gunicorn died during the surge")
        status, body = http_get(server.port, "/.well-known/jwks.json")
        if status != 200:
            raise server.failed(f"GET /.well-known/jwks.json answered {status}")
        jwks: dict[str, Any] = json.loads(body)
    return jwks


def surge_check(seeded: Seeded, jwks: dict[str, Any], results: Results) -> None:
    """Every 201 left an approved request with a grant, and a sample of grants verifies offline
    with the JWKS the server published."""
    from django.conf import settings
    from django.utils import timezone

    from licensing.grants import grant_verify_offline, revocation_list_token
    from licensing.models import AccessRequest, Grant
    from licensing.selectors import revoked_grant_ids

    figures = results.surge
    assert figures is not None
    model = seeded.models[LAUNCH]
    figures.grants = Grant.objects.filter(model=model, revoked_at__isnull=True).count()
    approved = AccessRequest.objects.filter(model=model, status="approved").count()
    if figures.failed > HANDFUL:
        results.failures.append(
            f"(a) {figures.failed} requests failed: {', '.join(figures.result['samples'])}"
        )
    if not figures.grants == approved == figures.created:
        results.failures.append(
            f"(a) {figures.created} answers 201, but {approved} approved requests and "
            f"{figures.grants} live grants"
        )
    now = timezone.now()
    revocations = revocation_list_token(
        key=seeded.key,
        issuer=settings.SITE_URL,
        revoked=revoked_grant_ids(now=now),
        issued_at=now,
        expires_at=now + timedelta(minutes=10),
    )
    for grant in Grant.objects.filter(model=model).order_by("?")[:50]:
        check = grant_verify_offline(grant.token, jwks=jwks, revocations=revocations, now=now)
        if not check.valid or check.claims.get("sub") != str(grant.user_id):
            results.failures.append(f"(a) grant {grant.jti} does not verify: {check.reason}")
            break
        figures.verified += 1


def bulk_approval(seeded: Seeded, params: Params, results: Results) -> None:
    """(b): pending requests made in bulk, all approved by one service call in this process."""
    from django.db import connection

    from licensing.models import Grant

    ids = _pending(seeded, REVIEW, seeded.users[: params.count])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()
    backend_pid = int(backend[0]) if backend else 0
    print(f"(b) approving {len(ids)} pending requests", flush=True)
    backend_before = process_cpu(backend_pid)
    cpu_started, started = time.process_time(), time.perf_counter()
    handled, refused = _approve(seeded, REVIEW, ids)
    seconds, python_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    backend_after = process_cpu(backend_pid)
    postgres_cpu = (
        backend_after - backend_before
        if backend_after is not None and backend_before is not None
        else None
    )
    grants = Grant.objects.filter(model=seeded.models[REVIEW], revoked_at__isnull=True).count()
    results.approval = ApprovalFigures(
        seconds, len(handled), refused, grants, python_cpu, postgres_cpu
    )
    if refused or len(handled) != len(ids) or grants != len(ids):
        some = dict(list(refused.items())[:HANDFUL])
        results.failures.append(
            f"(b) {len(handled)} of {len(ids)} approved, {grants} grants; refused e.g. {some}"
        )


def offline_checks(seeded: Seeded, jwks: dict[str, Any], params: Params, results: Results) -> None:
    """(c): the revocation list names the first `revoked` grants of the run (warm-up, surge);
    the grants checked are the 1000 after them, none of them listed."""
    from django.conf import settings
    from django.utils import timezone

    from licensing.grants import grant_verify_offline, revocation_list_token
    from licensing.models import Grant

    grants = list(Grant.objects.order_by("id").values_list("jti", "token")[: params.revoked + 1000])
    revoked, checked = grants[: params.revoked], grants[params.revoked :]
    if not checked or not revoked:
        results.failures.append("(c) not enough grants to check")
        return
    now = timezone.now()

    def listing(ids: list[str]) -> str:
        return revocation_list_token(
            key=seeded.key,
            issuer=settings.SITE_URL,
            revoked=ids,
            issued_at=now,
            expires_at=now + timedelta(hours=1),
        )

    revocations = {
        f"{len(revoked)} revoked": listing([str(jti) for jti, _ in revoked]),
        "none revoked": listing([]),
    }
    listed = grant_verify_offline(
        revoked[0][1], jwks=jwks, revocations=revocations[f"{len(revoked)} revoked"], now=now
    )
    if listed.valid or listed.reason != "revoked":
        results.failures.append(f"(c) a listed grant checks as {listed.reason or 'valid'}")
    print("(c) offline verification", flush=True)
    results.verify_rates = verify_rates(
        tokens=[token for _, token in checked], jwks=jwks, revocations=revocations, params=params
    )


def run(params: Params, results: Results) -> None:
    from django.db import connection

    routing_check(params.queue)
    results.load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"seeding {params.count + params.warmup + 1} users and sessions, 4 models", flush=True)
    started = time.perf_counter()
    seeded = seed(params)
    results.seed_seconds = time.perf_counter() - started
    results.costs_us = signing_costs(key=seeded.key, license=seeded.license)
    results.queries, listings = query_counts(seeded, show=params.profile > 0)
    results.profiles.update(listings)
    results.raw_signing.append(
        raw_signing_seconds(key=seeded.key, license=seeded.license, count=params.count)
    )
    connection.close()  # idle through the surge; CONN_MAX_AGE would close it anyway
    jwks = surge(seeded, params, results)
    surge_check(seeded, jwks, results)
    results.raw_signing.append(
        raw_signing_seconds(key=seeded.key, license=seeded.license, count=params.count)
    )
    bulk_approval(seeded, params, results)
    offline_checks(seeded, jwks, params, results)
    if params.profile:
        print(f"profiling {params.profile} submits and approvals in this process", flush=True)
        results.profiles.update(profile_in_process(seeded, params.profile))


# --- Reporting. --------------------------------------------------------------------------------


def _ms(seconds: float | None, per: int) -> str:
    return f"{1000 * seconds / per:.2f} ms" if seconds is not None and per else "n/a"


def raw_line(seconds: float, count: int) -> str:
    label = "raw signing loop (PyJWT ES256, key loaded)"
    return f"{label:<44}{seconds:>9.2f}{count / seconds:>9.0f}{'':>18}{1:>9.2f}"


def report(params: Params, results: Results) -> None:
    print()
    print("Weightgate licensing: access requests, approvals and grant checks next to raw ECDSA")
    print(
        f"  server   gunicorn config.wsgi (infra/gunicorn.conf.py: gthread, "
        f"{os.environ.get('WEB_THREADS', '4')} threads), {params.workers} workers, DEBUG=0, "
        "access log to /dev/null, loopback"
    )
    print(
        f"  load     {params.connections} concurrent HTTP/1.1 keep-alive connections from one "
        "separate process (asyncio), closed loop, each request a different user's session "
        "(cookie + CSRF header); warm-up of "
        f"{params.warmup} requests to another model first"
    )
    print(
        "  gate     auto approval (a) / manual (b), published license, form: country + required "
        "checkbox; grants key ES256 (P-256), one per run"
    )
    print(
        f"  celery   tasks queued on commit to {params.queue}, no worker (deleted at the end); "
        "no webhook endpoints"
    )
    print(
        f"  machine  {os.cpu_count()} CPUs, {platform.platform(terse=True)}, "
        f"Python {platform.python_version()}; load average "
        + (f"{results.load_average:.1f}" if results.load_average is not None else "n/a")
        + f" when the run began; seeding took {results.seed_seconds:.1f} s"
    )
    print(
        "  queries  "
        + ", ".join(f"{k} {v}" for k, v in results.queries.items())
        + " (in-process, one each)"
    )
    raw = results.raw_signing
    header = f"{'':<44}{'seconds':>9}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs raw':>9}"
    surge_figures = results.surge
    if raw:
        print()
        print(f"(a) launch-day surge: {params.count} access requests, each approved and signed")
        print(header)
        print("-" * len(header))
        print(raw_line(raw[0], params.count))
    if raw and surge_figures is not None:
        result = surge_figures.result
        print(
            f"{'surge through the API':<44}{result['seconds']:>9.2f}"
            f"{surge_figures.created / result['seconds']:>9.0f}"
            f"{surge_figures.latency_ms(0.5):>9.1f}{surge_figures.latency_ms(0.99):>9.1f}"
            f"{result['seconds'] / raw[0]:>9.1f}"
        )
        statuses = ", ".join(f"{s} x {n}" for s, n in sorted(result["statuses"].items()))
        print(
            f"  answers: {statuses}; transport errors {result['transport_errors']}; "
            f"{result['connects']} connections opened"
        )
        print(
            f"  checked: {surge_figures.grants} live grants on the model, {surge_figures.verified} "
            "of them verified with grant_verify_offline and the server's JWKS"
        )
        created = surge_figures.created
        print(
            f"  CPU per request: gunicorn workers {_ms(surge_figures.server_cpu, created)}, "
            f"PostgreSQL backends {_ms(surge_figures.postgres_cpu, created)}, load process "
            f"{_ms(result['cpu_seconds'], created)}; machine "
            + (
                f"{surge_figures.cores_busy:.2f} of {os.cpu_count()} cores busy"
                if surge_figures.cores_busy is not None
                else "n/a"
            )
        )
        sampler = surge_figures.sampler
        if sampler is not None and sampler.samples:
            # Held a fraction of the time, at so many requests a second: held this long each.
            held_ms = 1000 * sampler.held / sampler.samples * result["seconds"] / max(1, created)
            print(
                f"  audit advisory lock (every {SAMPLE_INTERVAL * 1000:.0f} ms, "
                f"{sampler.samples} samples): held {sampler.held / sampler.samples:.0%} of the "
                f"time (~{held_ms:.1f} ms per request), by a backend waiting on its Python thread "
                f"{sampler.holder_idle / max(1, sampler.held):.0%} of that; backends waiting for "
                f"it {sampler.mean(sampler.audit_waiting):.1f}, for other locks "
                f"{sampler.mean(sampler.other_waiting):.1f}, running SQL "
                f"{sampler.mean(sampler.running):.1f}, idle in transaction "
                f"{sampler.mean(sampler.idle_in_transaction):.1f} (means)"
            )
        if sampler is not None and sampler.error:
            print(f"  sampler failed: {sampler.error}")
        for sample in result["samples"]:
            print(f"  failed: {sample}")
    approval = results.approval
    if len(raw) > 1 and approval is not None:
        print()
        print(
            f"(b) bulk manual approval: {params.count} pending requests, one "
            "access_requests_handle call in this process"
        )
        print(header)
        print("-" * len(header))
        print(raw_line(raw[1], params.count))
        print(
            f"{'access_requests_handle(status=approved)':<44}{approval.seconds:>9.2f}"
            f"{approval.handled / approval.seconds:>9.0f}{'':>18}{approval.seconds / raw[1]:>9.1f}"
        )
        print(
            f"  {approval.handled} approved, {len(approval.refused)} refused, {approval.grants} "
            f"live grants; CPU per grant: this process {_ms(approval.python_cpu, approval.handled)}"
            f", its PostgreSQL backend {_ms(approval.postgres_cpu, approval.handled)}"
        )
    rates = results.verify_rates
    if rates:
        print()
        print(
            f"(c) offline grant verification: {params.rounds} rounds of "
            f"{params.verify_seconds:g} s each way, 1000 grants of this run, none of them listed"
        )
        vheader = f"{'':<44}{'per s':>9}{'us each':>9}{'vs raw':>9}  by round"
        print(vheader)
        print("-" * len(vheader))
        baseline = statistics.mean(rates["raw"])
        for label, measured in rates.items():
            name = (
                "raw ECDSA P-256 verify (cryptography)"
                if label == "raw"
                else f"grant_verify_offline, {label}"
            )
            rate = statistics.mean(measured)
            by_round = " ".join(f"{r:.0f}" for r in measured)
            print(f"{name:<44}{rate:>9.0f}{1e6 / rate:>9.1f}{baseline / rate:>9.2f}  {by_round}")
    if results.costs_us:
        print()
        print("Signing, per call in this process (1000 calls each)")
        for label, micros in results.costs_us.items():
            print(f"  {label:<46}{micros:>8.1f} us")
    for label, text in results.profiles.items():
        print()
        print(f"{label}:")
        print(text.rstrip())
    for failure in results.failures:
        print(f"FAILED {failure}")


# --- Entry points. -----------------------------------------------------------------------------


def driver_main(params_json: str) -> int:
    """Entry point of the child process, whose environment names the bench database and
    queue: seeds, measures, cleans the queue up, reports."""
    import django

    django.setup()
    from bench.catalog_api import ServerFailed

    params = Params(**json.loads(params_json))
    results = Results()
    status = 0
    try:
        run(params, results)
    except (BenchFailed, ServerFailed) as failure:
        results.failures.append(str(failure))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        status = 130
    finally:
        deleted = queue_delete(params.queue)
        print(f"deleted {deleted} queued task messages of {params.queue}", flush=True)
        report(params, results)
    return status or (1 if results.failures else 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count",
        type=int,
        help=f"requests in the surge and approvals in the bulk (default {DEFAULTS['count']})",
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="concurrent client connections (default 32)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--revoked",
        type=int,
        default=1000,
        help="ids in the revocation list of (c) (default 1000)",
    )
    parser.add_argument(
        "--verify-seconds",
        type=float,
        help=f"seconds per measurement in (c) (default {DEFAULTS['verify_seconds']:g})",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="measurements of each way in (c) (default 2)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also print the SQL of one submit and one approval, and time N of each, then "
        "cProfile N more (in this process, after the measurements)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run to check the bench works: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    parser.add_argument(
        "--database",
        help="throwaway database, dropped and created (default weightgate_bench_licensing_<id>)",
    )
    args = parser.parse_args(argv)
    chosen = QUICK if args.quick else DEFAULTS
    values = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in chosen.items()}
    if min(values["count"], args.connections, args.workers, args.revoked, args.rounds) < 1:
        parser.error("--count, --connections, --workers, --revoked and --rounds must be positive")
    if values["verify_seconds"] <= 0 or not 0 <= 2 * args.profile <= values["count"]:
        parser.error("--verify-seconds must be positive, --profile between 0 and --count / 2")

    from bench.catalog_api import bench_database, migrate_and_drive
    from config.settings import env_str  # also reads .local/env, like every other entry point

    run_id = uuid.uuid4().hex[:8]
    database = args.database or f"weightgate_bench_licensing_{run_id}"
    with (
        tempfile.TemporaryDirectory(prefix="weightgate-bench-licensing-") as scratch,
        bench_database(env_str("DATABASE_URL"), database) as database_url,
    ):
        params = Params(
            run_id=run_id,
            queue=f"bench-licensing-{run_id}",
            connections=args.connections,
            workers=args.workers,
            revoked=args.revoked,
            rounds=args.rounds,
            profile=args.profile,
            log_dir=scratch,
            **values,
        )
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            # Plain HTTP on loopback: cookies that require HTTPS would never come back.
            "SECURE_COOKIES": "0",
            # Everything the child and its server queue goes to this queue only: no other
            # worker on the machine (the demo's, say) sees the bench's tasks.
            "CELERY_TASK_DEFAULT_QUEUE": params.queue,
            "CELERY_TRANSFER_QUEUE": params.queue,
        }
        return migrate_and_drive(env, database, "bench.licensing", json.dumps(asdict(params)))


if __name__ == "__main__":
    sys.exit(main())
