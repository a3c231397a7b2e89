"""Liveness and readiness for load balancers and orchestrators."""

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up. Deliberately touches nothing else (it is also the benchmarks' bare
    Django baseline)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: PostgreSQL, Redis and the object store all answer. 503 names the ones
    that do not, without their error text (which may hold hosts or credentials)."""
    from config.redis_client import redis_client
    from release.storage import s3_client

    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["database"] = "unavailable"
    try:
        redis_client().ping()
        checks["redis"] = "ok"
    except Exception:  # noqa: BLE001
        checks["redis"] = "unavailable"
    try:
        s3_client().head_bucket(Bucket=settings.S3_BUCKET_GATED)
        checks["object_store"] = "ok"
    except Exception:  # noqa: BLE001
        checks["object_store"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
