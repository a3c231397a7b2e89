"""Prometheus metrics (the official `prometheus_client`), and the registry a scrape reads.

gunicorn and Celery's prefork pool run many processes, each with its own memory: with
`PROMETHEUS_MULTIPROC_DIR` set, every process writes its values to files in that directory and a
scrape sums them (`MultiProcessCollector`). Without it each process keeps its own values, which
is right only for a single process (runserver, a solo Celery worker, the tests).

Every label takes a bounded set of values: route patterns (never raw paths), known methods,
status codes, task names, our own refusal codes. A raw path or a client-chosen method as a label
would let anyone create series without end.
"""

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Answered before URL routing: static files (WhiteNoise), HTTPS and slash redirects, unknown URLs.
UNRESOLVED_ROUTE = "<unresolved>"

http_requests = Counter(
    "weightgate_http_requests",
    "HTTP requests answered, by method, route pattern and status code.",
    ["method", "route", "status"],
)
http_request_duration = Histogram(
    "weightgate_http_request_duration_seconds",
    "Time from the request entering Django to the response leaving it, by method and route.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
celery_tasks = Counter(
    "weightgate_celery_tasks",
    "Celery task runs, by task name and outcome (succeeded, failed, retried, ignored, rejected).",
    ["task", "outcome"],
)
celery_task_duration = Histogram(
    "weightgate_celery_task_duration_seconds",
    "Celery task run time, by task name.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0),
)
publish_bytes = Counter(
    "weightgate_publish_bytes",
    "Bytes written to distribution storage and verified, by operation (push: staging to the "
    "gated bucket through a worker; copy: gated to public bucket inside the object store).",
    ["operation"],
)
publish_blobs = Counter(
    "weightgate_publish_blobs",
    "Blobs handled by publishing, by operation and result (written; present: already in place "
    "and verified; mismatch: the staged bytes did not match the manifest, nothing published).",
    ["operation", "result"],
)
download_urls = Counter(
    "weightgate_download_urls",
    "Download URLs issued to GET requests, by surface (api: /api/v1 download; hub: resolve) "
    "and the artifact's phase.",
    ["surface", "phase"],
)
download_refusals = Counter(
    "weightgate_download_refusals",
    "Download requests refused, by surface, reason code and status.",
    ["surface", "reason", "status"],
)

_TASK_OUTCOMES = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "RETRY": "retried",
    "IGNORED": "ignored",
    "REJECTED": "rejected",
}

# (method, route, status) -> its counter and histogram children: `labels()` takes a lock and
# builds its key on every call; the request path is hot enough to remember them.
_http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def http_request_observe(*, method: str, route: str, status: int, seconds: float) -> None:
    if method not in HTTP_METHODS:
        method = "OTHER"
    key = (method, route, status)
    children = _http_children.get(key)
    if children is None:
        children = _http_children.setdefault(
            key,
            (
                http_requests.labels(method, route, str(status)),
                http_request_duration.labels(method, route),
            ),
        )
    children[0].inc()
    children[1].observe(seconds)


def celery_task_observe(*, task: str, state: str | None, seconds: float | None) -> None:
    celery_tasks.labels(task, _TASK_OUTCOMES.get(state or "", "other")).inc()
    if seconds is not None:
        celery_task_duration.labels(task).observe(seconds)


def publish_observe(*, operation: str, result: str, size: int) -> None:
    """`operation` push or copy; `result` written, present or mismatch. Only written bytes
    count in weightgate_publish_bytes."""
    publish_blobs.labels(operation, result).inc()
    if result == "written":
        publish_bytes.labels(operation).inc(size)


def download_issued(*, surface: str, phase: str) -> None:
    download_urls.labels(surface, phase).inc()


def download_refused(*, surface: str, reason: str, status: int) -> None:
    download_refusals.labels(surface, reason, str(status)).inc()


def scrape_registry(multiprocess_dir: str) -> CollectorRegistry:
    """What a scrape reads: every process's files in `multiprocess_dir`, or this process."""
    if not multiprocess_dir:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    return registry
