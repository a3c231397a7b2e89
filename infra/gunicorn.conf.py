"""gunicorn settings; every value can be overridden with GUNICORN_CMD_ARGS."""

import multiprocessing
import os
from pathlib import Path
from typing import Any

bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
# Threads keep connections alive between requests (sync workers close after each response),
# which Hub clients rely on between their HEAD and GET.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", 4))
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = "-"
# Never log headers: clients send their token in Authorization. The one response header logged
# is the request id the app set, so an access line can be matched with the app's lines.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
# LOG_FORMAT as in config/settings.py (same default): JSON lines for gunicorn's own logs too.
if os.environ.get("LOG_FORMAT", "json") == "json":
    from config.logs import gunicorn_logconfig

    logconfig_dict = gunicorn_logconfig()

# Metrics of several worker processes (config/metrics.py): each writes to this directory.
_METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def on_starting(server: Any) -> None:
    """Every run starts from an empty metrics directory: values of an earlier run would
    otherwise be added to this one's."""
    if _METRICS_DIR:
        for stale in Path(_METRICS_DIR).glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone (recycled or crashed): its live gauges must no longer count."""
    if _METRICS_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, _METRICS_DIR)  # type: ignore[no-untyped-call]
