"""Requests per second of the catalog API next to a bare Django view, on a real server.

Run from the project root (`make bench`, or `.venv/bin/python bench/catalog_api.py --help`). It
creates a throwaway database next to DATABASE_URL's (the demo data is never touched), migrates
it, seeds a catalog through the release services, serves it with gunicorn as configured in
infra/gunicorn.conf.py, and loads it over loopback from a second process. Each endpoint's rate is
printed as a ratio of /healthz's, a bare Django view on the same server: that ratio is what the
endpoint costs beyond Django and gunicorn themselves, and it moves far less between machines (and
between runs on a noisy one) than the raw rate.

Figures only: nothing here asserts on timings. The exit status is non-zero only when the server
failed (it died, or a request got no answer or an answer other than 200).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict
from urllib.parse import quote, urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    # Run as a script only bench/ is on the path; the project's packages are needed too.
    sys.path.insert(0, str(PROJECT_ROOT))

HOST = "127.0.0.1"
CONNECT_SPACING = 0.005  # seconds between the load generator's new connections
BASELINE_PATH = "/healthz"
LIST_PATH = "/api/v1/models/"

# The seeded catalog: a staged release half way through. In every version the first artifact is
# released (the older version open, the newer gated) and the second stays proprietary, so the
# visibility filtering has something to filter out.
ORGS = 5
VERSION_PHASES = (("v1.0", "open"), ("v2.0", "gated"))
ARTIFACT_NAMES = ("base", "instruct")
FILES_PER_VERSION = 10
CARD = "# Bench model\n\n" + "A model card long enough to look like one. " * 20 + "\n"


def repo_id(index: int) -> tuple[str, str]:
    return f"org-{index % ORGS}", f"model-{index:03d}"


def detail_path(models: int) -> str:
    org, name = repo_id(models // 2)
    return f"/api/v1/models/{org}/{name}/"


# --- Seeding: runs in a subprocess whose DATABASE_URL names the bench database. ---------------


def catalog_seed(*, models: int) -> None:
    """Fill the empty bench database through the release services. Files are rows only:
    nothing is uploaded, the digests are of made-up strings."""
    from django.db import transaction

    from release import services

    with transaction.atomic():
        for index in range(models):
            org, name = repo_id(index)
            model = services.model_create(
                actor=None, org=org, name=name, title=f"Bench model {index}", card=CARD
            )
            for version_name, phase in VERSION_PHASES:
                version = services.version_create(actor=None, model=model, name=version_name)
                released, proprietary = [
                    services.artifact_create(actor=None, version=version, name=artifact_name)
                    for artifact_name in ARTIFACT_NAMES
                ]
                for number in range(FILES_PER_VERSION):
                    artifact = released if number % 2 == 0 else proprietary
                    path = f"{artifact.name}/model-{number:05d}.safetensors"
                    key = f"bench/{org}/{name}/{version_name}/{path}"
                    services.file_add(
                        artifact=artifact,
                        path=path,
                        size=1_000_000 + number,
                        sha256=hashlib.sha256(key.encode()).hexdigest(),
                        storage_key=key,
                    )
                services.version_seal(actor=None, version=version)
                services.artifact_set_phase(actor=None, artifact=released, phase=phase)


def queries_per_request(*, paths: Sequence[str]) -> dict[str, int]:
    """SQL queries of one anonymous request to each path, through the whole middleware stack."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST=HOST)
    counts = {}
    for path in paths:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path, headers={"accept": "application/json"})
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code} in the seed process")
        counts[path] = len(queries)
    return counts


def seed_main(models: int, paths: list[str]) -> None:
    """Entry point of the seeding subprocess: seeds, then prints the query counts as JSON."""
    import django

    django.setup()
    from licensing.keys import signing_key_ensure

    signing_key_ensure(purpose="models")  # sealing signs each version
    catalog_seed(models=models)
    print(json.dumps(queries_per_request(paths=paths)))


# --- Load generator: runs in a separate process. ---------------------------------------------


class LoadResult(TypedDict):
    seconds: float
    requests: int
    errors: int
    error_samples: list[str]
    connects: int
    body_bytes: int
    latencies: list[float]
    cpu_seconds: float


@dataclass
class _Tally:
    recording: bool = False
    requests: int = 0
    errors: int = 0
    connects: int = 0
    body_bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        # Counted during the warm-up too: a failing server must not hide there.
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _close(stream: _Stream | None) -> None:
    if stream is not None:
        stream[1].close()


async def response_read(
    reader: asyncio.StreamReader, *, head: bool = False
) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open, of one HTTP/1.1 response (to a HEAD
    when `head`: headers only, whatever Content-Length says)."""
    head_bytes = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head_bytes[:-4].decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip().lower()
    if head:
        return status, b"", headers.get("connection") != "close"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        return status, body, headers.get("connection") != "close"
    if "chunked" in headers.get("transfer-encoding", ""):
        raise ValueError("chunked responses are not supported")
    return status, await reader.read(), False


# What a client connection can run into: the server closed it, sent garbage, or took too much.
TRANSPORT_ERRORS = (OSError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError)


class Connection:
    """One client's HTTP/1.1 keep-alive connection to the server on loopback, opened on first
    use and again after the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: _Stream | None = None
        self.connects = 0

    def close(self) -> None:
        _close(self.stream)
        self.stream = None

    async def exchange(self, request: bytes, *, head: bool = False) -> tuple[int, bytes]:
        """Send `request`, read its answer: status and body. A kept-alive connection that the
        server had just closed is reopened and the request sent again, once; any other
        transport failure raises (one of TRANSPORT_ERRORS), the connection closed."""
        for attempt in range(2):
            reused = self.stream is not None
            try:
                if self.stream is None:
                    self.stream = await asyncio.open_connection(HOST, self.port)
                    self.connects += 1
                reader, writer = self.stream
                writer.write(request)
                status, body, keep_alive = await response_read(reader, head=head)
            except TRANSPORT_ERRORS as error:
                self.close()
                closed = isinstance(error, asyncio.IncompleteReadError | OSError)
                if reused and attempt == 0 and closed:
                    continue
                raise
            if not keep_alive:
                self.close()
            return status, body
        raise AssertionError("unreachable: the second attempt returns or raises")


async def _drive(
    port: int, requests: Sequence[bytes], tally: _Tally, *, expect: int = 200, head: bool = False
) -> None:
    """One client connection: request after request (taking `requests` in turn), reconnecting
    whenever the server closes. An answer other than `expect` is an error."""
    connection = Connection(port)
    turn = 0
    try:
        while True:
            request = requests[turn % len(requests)]
            started, connects = time.perf_counter(), connection.connects
            try:
                status, body = await connection.exchange(request, head=head)
            except TRANSPORT_ERRORS as error:
                tally.error(f"{type(error).__name__}: {error}")
                await asyncio.sleep(0.05)
                continue
            turn += 1
            if tally.recording:
                tally.requests += 1
                tally.connects += connection.connects - connects
                tally.body_bytes += len(body)
                tally.latencies.append(time.perf_counter() - started)
            if status != expect:
                tally.error(f"HTTP {status}")
    finally:
        connection.close()


def request_bytes(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> bytes:
    """One HTTP/1.1 request with no body, as the load generator sends it."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Accept: application/json",
        "User-Agent: weightgate-bench",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _load(
    port: int,
    requests: Sequence[Sequence[bytes]],
    warmup: float,
    duration: float,
    expect: int,
    head: bool,
) -> LoadResult:
    tally = _Tally()
    tasks = []
    started = time.perf_counter()
    for turns in requests:
        tasks.append(asyncio.create_task(_drive(port, turns, tally, expect=expect, head=head)))
        # Connections opened in one burst all land on whichever worker wakes first, and stay
        # there (keep-alive): a few milliseconds apart, the idle workers take their share.
        await asyncio.sleep(CONNECT_SPACING)
    # One continuous load: the warm-up runs into the measurement with no gap in between.
    await asyncio.sleep(max(0.0, warmup - (time.perf_counter() - started)))
    tally.recording = True
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.sleep(duration)
    tally.recording = False
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            tally.error(f"client crashed: {type(outcome).__name__}: {outcome}")
    return LoadResult(
        seconds=seconds,
        requests=tally.requests,
        errors=tally.errors,
        error_samples=tally.error_samples,
        connects=tally.connects,
        body_bytes=tally.body_bytes,
        latencies=tally.latencies,
        cpu_seconds=cpu_seconds,
    )


def load_run(port: int, path: str, connections: int, warmup: float, duration: float) -> LoadResult:
    """`connections` concurrent HTTP/1.1 clients of GET `path`: `warmup` seconds unrecorded, then
    `duration` seconds recorded."""
    request = request_bytes(port, path)
    return load_run_requests(port, [[request]] * connections, warmup, duration)


def load_run_requests(
    port: int,
    requests: Sequence[Sequence[bytes]],
    warmup: float,
    duration: float,
    expect: int = 200,
    head: bool = False,
) -> LoadResult:
    """One concurrent HTTP/1.1 client per item of `requests`, each sending its own requests in
    turn: `warmup` seconds unrecorded, then `duration` seconds recorded. `head`: the requests
    are HEADs (answers without a body)."""
    return asyncio.run(_load(port, requests, warmup, duration, expect, head))


# --- The bench database and the server. -------------------------------------------------------


class ServerFailed(Exception):
    pass


def _url_with_database(url: str, name: str, *, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, path="/" + quote(name)))


@contextmanager
def bench_database(database_url: str, name: str) -> Iterator[str]:
    """A new, empty database `name` on DATABASE_URL's server, dropped on the way out; yields its
    URL."""
    import psycopg
    from psycopg import sql

    if urlsplit(database_url).path.lstrip("/") == name:
        raise SystemExit(f"--database {name} is DATABASE_URL's own database; pick another name")
    # libpq spells the scheme postgresql; dj-database-url also accepts aliases (postgis, pgsql).
    admin_url = _url_with_database(database_url, "postgres", scheme="postgresql")
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(drop)
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _url_with_database(database_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(drop)


def migrate_and_drive(env: dict[str, str], database: str, module: str, payload: str) -> int:
    """Migrate the bench database, then run `module.driver_main(payload)` in a child process
    with `env` and return its exit code. On Ctrl-C the child got the same SIGINT: give it time to
    stop its servers and clean up before the caller drops the database."""
    print(f"migrating database {database}", flush=True)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; from {module} import driver_main; sys.exit(driver_main(sys.argv[1]))",
            payload,
        ],
        cwd=PROJECT_ROOT,
        env=env,
    )
    try:
        return child.wait()
    except KeyboardInterrupt:
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        print("interrupted; bench database dropped", file=sys.stderr)
        return 130


def http_get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def failed(self, why: str) -> ServerFailed:
        tail = self.log.read_text(errors="replace").splitlines()[-20:]
        return ServerFailed("\n    ".join([why, "gunicorn log, last lines:", *tail]))


@contextmanager
def gunicorn_running(env: dict[str, str], workers: int, log: Path) -> Iterator[Server]:
    """gunicorn with the project's config on a free loopback port, until /healthz answers."""
    port = free_port()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--config",
                "infra/gunicorn.conf.py",
                "--access-logfile",
                "/dev/null",
            ],
            cwd=PROJECT_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**env, "WEB_BIND": f"{HOST}:{port}", "WEB_CONCURRENCY": str(workers)},
        )
    server = Server(process=process, port=port, log=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if not server.alive():
                raise server.failed(f"gunicorn exited with status {process.returncode}")
            try:
                if http_get(port, BASELINE_PATH)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise server.failed(f"{BASELINE_PATH} did not answer 200 within 30 s")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)  # gunicorn's graceful_timeout is 30 s
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- Measuring and reporting. -----------------------------------------------------------------


def percentile_ms(latencies: Sequence[float], fraction: float) -> float:
    """The `fraction` percentile (nearest rank) of latencies in seconds, in milliseconds."""
    ordered = sorted(latencies)
    if not ordered:
        return math.nan
    return 1000 * ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


_Summed = Literal["seconds", "requests", "errors", "connects", "cpu_seconds"]


@dataclass
class Endpoint:
    label: str
    path: str
    queries: int = 0
    body_bytes: int = 0
    rounds: list[LoadResult] = field(default_factory=list)
    method: str = "GET"
    expect: int = 200
    # Optional: paths taken in turn instead of `path` alone, and headers per connection (the
    # connections take these in turn too, e.g. one token each).
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.path if len(self.paths) <= 1 else f"{self.method} {self.label}"

    def requests(self, port: int, connections: int) -> list[list[bytes]]:
        """Each connection's requests: every path, starting at a different one per connection,
        with that connection's headers."""
        paths = self.paths or [self.path]
        turns = []
        for index in range(connections):
            headers = self.headers[index % len(self.headers)] if self.headers else None
            order = paths[index % len(paths) :] + paths[: index % len(paths)]
            turns.append(
                [request_bytes(port, p, method=self.method, headers=headers) for p in order]
            )
        return turns

    def rate(self, result: LoadResult | None = None) -> float:
        results = [result] if result else self.rounds
        return sum(r["requests"] for r in results) / sum(r["seconds"] for r in results)

    def latency_ms(self, fraction: float) -> float:
        return percentile_ms([latency for r in self.rounds for latency in r["latencies"]], fraction)

    def total(self, key: _Summed) -> float:
        return sum(r[key] for r in self.rounds)


def measure(
    endpoints: list[Endpoint],
    *,
    server: Server,
    connections: int,
    warmup: float,
    duration: float,
    rounds: int,
) -> None:
    """Every endpoint once per round, in reverse order every other round, so that a machine
    getting slower or faster during the run weighs on every endpoint alike."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as load_process:
        for round_index in range(rounds):
            order = endpoints if round_index % 2 == 0 else endpoints[::-1]
            for endpoint in order:
                result = load_process.submit(
                    load_run_requests,
                    server.port,
                    endpoint.requests(server.port, connections),
                    warmup,
                    duration,
                    endpoint.expect,
                    endpoint.method == "HEAD",
                ).result()
                endpoint.rounds.append(result)
                print(
                    f"  round {round_index + 1}/{rounds}  {endpoint.title:<36} "
                    f"{endpoint.rate(result):8.1f} req/s  errors {result['errors']}",
                    flush=True,
                )
                if not server.alive():
                    raise server.failed(f"gunicorn died while loading {endpoint.title}")


def report(endpoints: list[Endpoint], args: argparse.Namespace) -> None:
    baseline = endpoints[0]
    print()
    print("Weightgate catalog API: requests per second next to a bare Django view")
    print(
        f"  server   gunicorn config.wsgi (infra/gunicorn.conf.py: gthread), {args.workers} "
        "workers, DEBUG=0, access log to /dev/null, loopback"
    )
    print(
        f"  load     {args.connections} concurrent HTTP/1.1 connections from one separate "
        "process (asyncio)"
    )
    print(
        f"  timing   {args.warmup:g} s warm-up + {args.duration:g} s per measurement, "
        f"{args.rounds} rounds (order reversed every other round)"
    )
    print(
        f"  catalog  {args.models} models x {len(VERSION_PHASES)} versions x "
        f"{len(ARTIFACT_NAMES)} artifacts (1 released, 1 proprietary), "
        f"{FILES_PER_VERSION} files per version"
    )
    print(
        "  queries  "
        + ", ".join(f"{e.label} {e.queries}" for e in endpoints)
        + " SQL queries per anonymous request"
    )
    print(
        f"  machine  {os.cpu_count()} CPUs, {platform.platform(terse=True)}, "
        f"Python {platform.python_version()}"
    )
    print()
    header = (
        f"{'endpoint':<38}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'bytes':>8}{'client cpu':>12}{'vs bare view':>14}  by round"
    )
    print(header)
    print("-" * len(header))
    for endpoint in endpoints:
        by_round = " ".join(
            f"{endpoint.rate(r) / baseline.rate(b):.2f}"
            for r, b in zip(endpoint.rounds, baseline.rounds, strict=True)
        )
        cpu = endpoint.total("cpu_seconds") / endpoint.total("seconds")
        print(
            f"{endpoint.path:<38}{endpoint.rate():>9.1f}{endpoint.latency_ms(0.50):>9.1f}"
            f"{endpoint.latency_ms(0.99):>9.1f}{int(endpoint.total('errors')):>8}"
            f"{endpoint.body_bytes:>8}{cpu:>11.0%} {endpoint.rate() / baseline.rate():>14.2f}"
            f"  {by_round}"
        )
    requests, connects = (sum(e.total(key) for e in endpoints) for key in ("requests", "connects"))
    if requests:
        print(
            f"\nNew TCP connections: {connects / requests:.0%} of requests (keep-alive reuses "
            "the rest)."
        )
    for endpoint in endpoints:
        for sample in sorted({s for r in endpoint.rounds for s in r["error_samples"]}):
            print(f"error on {endpoint.path}: {sample}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=8.0,
        help="seconds measured per endpoint and round (default 8)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of unrecorded load before each measurement (default 1)",
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="concurrent client connections (default 32)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="measurements of every endpoint (default 2)"
    )
    parser.add_argument("--models", type=int, default=50, help="models to seed (default 50)")
    parser.add_argument(
        "--database",
        default="weightgate_bench",
        help="throwaway database, dropped and created (default weightgate_bench)",
    )
    args = parser.parse_args(argv)
    if min(args.connections, args.workers, args.rounds, args.models) < 1 or args.duration <= 0:
        parser.error("--connections, --workers, --rounds, --models and --duration must be positive")

    from config.settings import env_str  # also reads .local/env, like every other entry point

    endpoints = [
        Endpoint("bare view", BASELINE_PATH),
        Endpoint("list", LIST_PATH),
        Endpoint("detail", detail_path(args.models)),
    ]
    try:
        with (
            tempfile.TemporaryDirectory(prefix="weightgate-bench-") as scratch,
            bench_database(env_str("DATABASE_URL"), args.database) as database_url,
        ):
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DEBUG": "0",
            }
            print(f"migrating database {args.database}", flush=True)
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
                cwd=PROJECT_ROOT,
                env=env,
                check=True,
            )
            print(f"seeding {args.models} models", flush=True)
            paths = [endpoint.path for endpoint in endpoints]
            seeded = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"from bench.catalog_api import seed_main; seed_main({args.models}, {paths!r})",
                ],
                cwd=PROJECT_ROOT,
                env=env,
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            )
            queries = json.loads(seeded.stdout.splitlines()[-1])
            with gunicorn_running(env, args.workers, Path(scratch) / "gunicorn.log") as server:
                for endpoint in endpoints:
                    status, body = http_get(server.port, endpoint.path)
                    if status != 200:
                        raise server.failed(f"GET {endpoint.path} answered {status}")
                    endpoint.queries, endpoint.body_bytes = queries[endpoint.path], len(body)
                print(f"gunicorn on {HOST}:{server.port}; loading", flush=True)
                measure(
                    endpoints,
                    server=server,
                    connections=args.connections,
                    warmup=args.warmup,
                    duration=args.duration,
                    rounds=args.rounds,
                )
    except ServerFailed as failure:
        print(f"server failed: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; server stopped and bench database dropped", file=sys.stderr)
        return 130
    report(endpoints, args)
    return 1 if any(endpoint.total("errors") for endpoint in endpoints) else 0


if __name__ == "__main__":
    sys.exit(main())
