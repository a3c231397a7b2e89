"""gunicorn settings; every value can be overridden with GUNICORN_CMD_ARGS."""

import multiprocessing
import os

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
# Never log headers: clients send their token in Authorization.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
