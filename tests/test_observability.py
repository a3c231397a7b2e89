"""Operations: request ids (kept when well-formed, replaced when not, carried into tasks),
JSON log lines, Prometheus metrics (requests, downloads, publishing, Celery tasks in a real
worker) and who may read /metrics."""

import io
import json
import logging
import logging.config
import os
import re
import socket
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime

import pytest
from celery import shared_task
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from config import request_id
from config.logs import logging_config
from config.redis_client import redis_client
from release import services
from release.distribution import BUFFER_KEY
from release.models import Phase
from release.services.unlocks import unlock_advance, unlock_push_file
from tests.celery_worker import WORKER_LOG, celery_worker, wait_for
from tests.factories import make_release, make_user
from tests.staging import ingest_now

NEW_ID = re.compile(r"[0-9a-f]{32}")


def scrape(client, **extra) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics, parsed: {(sample name, labels): value}."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return float(samples.get((name, frozenset(labels.items())), 0.0))


@pytest.fixture
def no_metrics_token(settings):
    settings.METRICS_TOKEN = ""


# --- request ids ---------------------------------------------------------------------------------


def test_each_request_gets_an_id_in_its_response(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]

    assert NEW_ID.fullmatch(first)
    assert NEW_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "incoming", ["b9e2f1c0-54aa-4a49-9a2c-2f9c1d0e5b11", "Root=1-67891233-abcdef", "lb:42.7_x"]
)
def test_a_well_formed_incoming_id_is_kept(client, incoming):
    assert client.get("/healthz", HTTP_X_REQUEST_ID=incoming)["X-Request-ID"] == incoming


@pytest.mark.parametrize(
    "hostile",
    [
        "abc\r\nX-Injected: 1",
        "abc\nlevel=ERROR forged line",
        "a" * 10_000,
        "a" * 129,
        "ünïcödé-id",
        "id with spaces",
        '"quoted"',
        "",
        "-starts-with-a-dash",
    ],
)
def test_a_malformed_incoming_id_is_replaced(client, hostile):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=hostile)

    assert NEW_ID.fullmatch(response["X-Request-ID"])
    assert "X-Injected" not in response


def test_no_request_id_outlives_its_request(client):
    client.get("/healthz", HTTP_X_REQUEST_ID="finished-request")

    assert request_id.get() is None


# --- log lines -----------------------------------------------------------------------------------


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter settings.LOGGING builds, built the same way (dictConfig's factory)."""
    configurator = logging.config.dictConfigClass(
        logging_config(log_format=log_format, level="INFO")
    )
    return configurator.configure_formatter(configurator.config["formatters"][log_format])


@pytest.fixture
def log_output():
    """What the console handler of settings.LOGGING writes, as JSON, while the test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for("json"))
    handler.addFilter(request_id.RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.mark.django_db
def test_log_lines_are_json_with_the_request_id_and_no_credentials(log_output):
    secret = "wg_" + "s" * 40
    response = APIClient().get(
        "/api/v1/models/acme/none/versions/v1/files/base/a.bin",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        HTTP_COOKIE="sessionid=cookie-value-that-must-not-show",
        HTTP_X_REQUEST_ID="trace-me-123",
    )
    assert response.status_code == 401

    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    line = next(line for line in lines if line["logger"] == "django.request")
    assert line["level"] == "WARNING"
    assert line["message"].startswith("Unauthorized: /api/v1/models/acme/none/")
    assert line["request_id"] == "trace-me-123"
    assert line["status_code"] == 401
    assert datetime.fromisoformat(line["time"]).tzinfo == UTC
    assert "request" not in line  # Django's HttpRequest object stays out
    assert secret not in log_output.getvalue()
    assert "cookie-value-that-must-not-show" not in log_output.getvalue()


def test_a_json_line_carries_extras_and_null_outside_requests():
    record = logging.LogRecord("release.x", logging.INFO, __file__, 1, "pushed %s", ("a",), None)
    record.unlock = 7

    line = json.loads(formatter_for("json").format(record))

    assert line == {
        "level": "INFO",
        "logger": "release.x",
        "message": "pushed a",
        "request_id": None,
        "unlock": 7,
        "time": line["time"],
    }


def test_plain_lines_show_the_request_id_or_a_dash():
    record = logging.LogRecord("release.x", logging.INFO, __file__, 1, "hello", None, None)
    plain = formatter_for("plain")
    assert "release.x [-] hello" in plain.format(record)

    record.request_id = "abc"
    assert "release.x [abc] hello" in plain.format(record)


# --- /metrics access -----------------------------------------------------------------------------


def test_metrics_answer_loopback_without_a_token(client, no_metrics_token):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        {"REMOTE_ADDR": "203.0.113.9"},
        {"REMOTE_ADDR": "10.0.0.5"},
        # A reverse proxy on the same host: loopback, but on behalf of someone else.
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_FORWARDED": "for=203.0.113.9"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "203.0.113.9"},
    ],
)
def test_metrics_refuse_everyone_else_without_a_token(client, no_metrics_token, extra):
    response = client.get("/metrics", **extra)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert b"weightgate_" not in response.content


def test_with_a_token_metrics_need_it_even_from_loopback(client, settings):
    settings.METRICS_TOKEN = "m" * 32

    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + "x" * 32)
    not_bearer = client.get("/metrics", HTTP_AUTHORIZATION="m" * 32)
    right = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer " + "m" * 32
    )

    assert [r.status_code for r in (missing, wrong, not_bearer)] == [401, 401, 401]
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert b"weightgate_http_requests_total" in right.content


def test_metrics_are_read_only(client, no_metrics_token):
    assert client.post("/metrics").status_code == 405


# --- HTTP metrics --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_requests_are_counted_by_route_pattern_never_by_path(client, no_metrics_token):
    route = "api/v1/models/<str:org>/<str:name>/"
    before = scrape(client)
    unique = f"nothing-{uuid.uuid4().hex}"

    client.get(f"/api/v1/models/acme/{unique}/")
    client.get("/healthz")
    client.generic("BREW", "/healthz")  # a method of the client's choosing
    after_text = client.get("/metrics").content.decode()
    after = parse(after_text)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "weightgate_http_requests_total"
    assert delta(requests, method="GET", route=route, status="404") == 1
    assert delta(requests, method="GET", route="healthz", status="200") == 1
    assert delta(requests, method="OTHER", route="healthz", status="200") == 1
    duration = "weightgate_http_request_duration_seconds_count"
    assert delta(duration, method="GET", route=route) == 1
    assert unique not in after_text
    assert "BREW" not in after_text


def test_unrouted_answers_share_one_label(client, no_metrics_token):
    before = scrape(client)

    client.get(f"/no/such/{uuid.uuid4().hex}/page")

    after = scrape(client)
    labels = {"method": "GET", "route": "<unresolved>", "status": "404"}
    name = "weightgate_http_requests_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 1


# --- downloads -----------------------------------------------------------------------------------


@pytest.fixture
def open_and_gated(db):
    """acme/tiny v1: `base` open, `extra` gated. Downloads push events onto the shared buffer,
    emptied again afterwards (they name this test's rows)."""
    make_release(artifacts={"base": Phase.OPEN, "extra": Phase.GATED})
    yield
    redis_client().delete(BUFFER_KEY)


def test_download_urls_are_counted_by_surface_and_phase(client, open_and_gated, no_metrics_token):
    api_url = "/api/v1/models/acme/tiny/versions/v1/files/base/part-0.bin"
    before = scrape(client)

    assert client.get(api_url, HTTP_PREFER="no-redirect").status_code == 200
    assert client.get(api_url).status_code == 302
    assert client.head(api_url).status_code == 302  # a look, not a download
    assert client.get("/acme/tiny/resolve/v1/base/part-0.bin").status_code == 302
    assert client.head("/acme/tiny/resolve/v1/base/part-1.bin").status_code == 302

    after = scrape(client)
    name = "weightgate_download_urls_total"
    api = value(after, name, surface="api", phase="open") - value(
        before, name, surface="api", phase="open"
    )
    hub = value(after, name, surface="hub", phase="open") - value(
        before, name, surface="hub", phase="open"
    )
    assert (api, hub) == (2, 1)


def test_download_refusals_are_counted_by_reason(client, open_and_gated, no_metrics_token):
    before = scrape(client)

    client.get("/api/v1/models/acme/tiny/versions/v1/files/extra/part-0.bin")  # gated, anonymous
    client.get("/acme/nothing/resolve/main/a.bin")  # no such model
    client.get("/acme/tiny/resolve/v1/base/missing.bin")
    client.get(
        "/acme/tiny/resolve/v1/base/part-0.bin", HTTP_AUTHORIZATION="Bearer wg_" + "x" * 40
    )  # refused by authentication, before the view

    after = scrape(client)
    name = "weightgate_download_refusals_total"

    def delta(**labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(surface="api", reason="gated", status="401") == 1
    assert delta(surface="hub", reason="model_not_found", status="404") == 1
    assert delta(surface="hub", reason="file_not_found", status="404") == 1
    assert delta(surface="hub", reason="token_invalid", status="401") == 1


# --- publishing ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pushed_bytes_are_counted_once_and_a_present_blob_is_not(client, no_metrics_token):
    files = {"a.bin": os.urandom(3000), "b.bin": os.urandom(5000)}  # bytes of this test's own
    first, _ = ingest_now(name=f"pub-{uuid.uuid4().hex[:8]}", artifacts={"base": files})
    second, _ = ingest_now(name=first.model.name, version="v2", artifacts={"base": files})
    staff = make_user("staff", is_staff=True)
    approvers = [make_user(name, is_staff=True) for name in ("alice", "bob")]

    def publish(version):
        unlock = services.unlock_schedule(
            actor=staff,
            version=version,
            artifacts=["base"],
            target_phase=Phase.GATED,
            not_before=datetime.now(UTC),
        )
        for person in approvers:
            services.unlock_approve(unlock=unlock, approver=person)
        unlock_advance(unlock_id=unlock.pk)
        for row_id in unlock.files.values_list("pk", flat=True):
            unlock_push_file(unlock_file_id=row_id)

    before = scrape(client)
    publish(first)
    middle = scrape(client)
    publish(second)  # the same content: already in place
    after = scrape(client)

    def delta(start, end, name, **labels):
        return value(end, name, **labels) - value(start, name, **labels)

    bytes_total = "weightgate_publish_bytes_total"
    blobs = "weightgate_publish_blobs_total"
    assert delta(before, middle, bytes_total, operation="push") == 8000
    assert delta(before, middle, blobs, operation="push", result="written") == 2
    assert delta(middle, after, bytes_total, operation="push") == 0
    assert delta(middle, after, blobs, operation="push", result="present") == 2


# --- Celery --------------------------------------------------------------------------------------


@shared_task(name="tests.test_observability.breaks")
def breaks() -> None:
    raise RuntimeError("broken on purpose")


@pytest.mark.django_db
def test_an_eager_task_keeps_the_callers_id_and_runs_are_counted(log_output):
    from release.tasks import ingest_finalize

    def runs(task, outcome):
        labels = {"task": task, "outcome": outcome}
        return REGISTRY.get_sample_value("weightgate_celery_tasks_total", labels) or 0.0

    finalize = "release.tasks.ingest_finalize"
    before = (runs(finalize, "succeeded"), runs(breaks.name, "failed"))
    request_id.set_current("caller-id")
    try:
        ingest_finalize.apply(args=[987655])
        breaks.apply()
        assert request_id.get() == "caller-id"
    finally:
        request_id.set_current(None)

    after = (runs(finalize, "succeeded"), runs(breaks.name, "failed"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    line = next(line for line in lines if "ingest #987655" in line["message"])
    assert line["request_id"] == "caller-id"


# --- Celery: a real worker -----------------------------------------------------------------------


def json_or_none(line: bytes):
    try:
        return json.loads(line)
    except ValueError:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.django_db(transaction=True)
def test_a_prefork_worker_serves_task_metrics_and_logs_the_request_id(tmp_path):
    from release.tasks import heartbeat, ingest_finalize

    port = free_port()
    trace = f"trace-{uuid.uuid4().hex}"
    log_start = WORKER_LOG.stat().st_size if WORKER_LOG.exists() else 0
    env = {
        "CELERY_METRICS_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "LOG_FORMAT": "json",
    }

    def worker_samples():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                return parse(answer.read().decode())
        except OSError:
            return {}  # not listening yet

    def task_count(samples, task):
        return value(
            samples, "weightgate_celery_tasks_total", task=task, outcome="succeeded"
        ) + value(samples, "weightgate_celery_tasks_total", task=task, outcome="failed")

    with celery_worker(concurrency=2, env_extra=env):
        # As a request would: the tasks it queues carry its id.
        request_id.set_current(trace)
        try:
            heartbeat.delay()
            ingest_finalize.delay(987654)  # no such ingest: the task logs that and ends
        finally:
            request_id.set_current(None)
        wait_for(
            lambda: (
                task_count(worker_samples(), "release.tasks.heartbeat") >= 1
                and task_count(worker_samples(), "release.tasks.ingest_finalize") >= 1
            ),
            timeout=120,
            what="the worker's metrics to count both tasks",
        )
        samples = worker_samples()

    assert (
        value(
            samples,
            "weightgate_celery_tasks_total",
            task="release.tasks.heartbeat",
            outcome="succeeded",
        )
        == 1
    )
    assert (
        value(
            samples,
            "weightgate_celery_task_duration_seconds_count",
            task="release.tasks.heartbeat",
        )
        == 1
    )
    # The pool's children wrote their values to the directory the main process reads.
    assert list(tmp_path.glob("*.db"))
    with WORKER_LOG.open("rb") as log:
        log.seek(log_start)
        lines = [json_or_none(line) for line in log]  # other sessions' workers write here too
    traced = [line for line in lines if line and line.get("request_id") == trace]
    assert any("ingest #987654 no longer exists" in line["message"] for line in traced)


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "bad", "message"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of json, plain"),
        ("METRICS_TOKEN", "short", "METRICS_TOKEN must be at least 16 characters"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics", "must be an existing directory"),
        ("CELERY_METRICS_PORT", "70000", "CELERY_METRICS_PORT must be a TCP port"),
    ],
)
def test_bad_operations_settings_stop_the_process(variable, bad, message):
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        env={**os.environ, variable: bad},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert message in result.stderr


def test_link_keys_in_paths_are_blanked_in_every_log(log_output):
    # allauth's confirmation and password-reset links carry their key in the path, which Django
    # (a 404) and gunicorn (the access line) would log as is.
    from config.logs import SecretPathFilter, gunicorn_logconfig

    root = logging.getLogger()
    handler = root.handlers[-1]  # log_output's
    handler.addFilter(SecretPathFilter())
    logging.getLogger("django.request").warning(
        "Not Found: %s", "/accounts/confirm-email/MTI:1vPq:s3cret-confirm/"
    )
    logging.getLogger("gunicorn.access").info(
        "%(r)s", {"r": "GET /accounts/password/reset/key/4-s3cret-reset/ HTTP/1.1"}
    )

    written = log_output.getvalue()
    assert "/accounts/confirm-email/[key]/" in written
    assert "/accounts/password/reset/key/[key]/" in written
    assert "s3cret" not in written
    # ...and the filter is on every handler the settings and gunicorn configure.
    assert (
        "secret_paths"
        in logging_config(log_format="plain", level="INFO")["handlers"]["console"]["filters"]
    )
    for gunicorn_handler in gunicorn_logconfig()["handlers"].values():
        assert "secret_paths" in gunicorn_handler["filters"]
