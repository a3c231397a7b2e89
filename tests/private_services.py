"""Private PostgreSQL, Redis and SeaweedFS servers for fault-injection tests.

They are started by the project's own launchers (`infra/local.py`) on free ports with folders of
their own, so a test may stop, crash and restart them at will: the shared services on the
project's ports are never touched. The `*_pointed_at` helpers point this test process at them
(settings, cached clients, the Celery producer); workers get `s3_settings_env()`.
"""

import os
import random
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.test import override_settings

from config.celery import app
from infra.local import HOST, WEED_PORTS, Postgres, Redis, SeaweedFS, pid_alive


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_weed_ports() -> dict[str, int]:
    """One port per `weed mini` listener, each with its gRPC twin (+10000) free too. Drawn
    below 22768, so that the twins stay under Linux's ephemeral range (32768 and up)."""
    names = list(WEED_PORTS)
    for _ in range(200):
        base = random.randrange(20_000, 22_768 - len(names))
        ports = [base + index for index in range(len(names))]
        if all(_free(port) and _free(port + 10_000) for port in ports):
            return dict(zip(names, ports, strict=True))
    raise RuntimeError("no free block of ports for a private SeaweedFS")


@dataclass
class PrivateS3:
    """A `weed mini` of this test's own, with credentials of its own (so that a client pointed
    at the wrong server fails loudly)."""

    server: SeaweedFS
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start(self.access_key, self.secret_key)

    def crash(self) -> None:
        """SIGKILL: every connection drops at once, as when the store's host dies. (SIGTERM
        would let weed finish what it is doing for a couple of seconds first, and after a crash
        its volume server may take half a minute to stop.)"""
        pid = pid_alive(self.server.pid_file)
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
        self.server.stop()  # reaps it and forgets the pid


@contextmanager
def private_s3(folder: Path) -> Iterator[PrivateS3]:
    store = PrivateS3(
        server=SeaweedFS(data=folder, ports=free_weed_ports()),
        access_key="wgf" + secrets.token_hex(8),
        secret_key=secrets.token_urlsafe(30),
    )
    store.start()
    try:
        yield store
    finally:
        store.crash()  # its data is thrown away: no need to wait for a clean stop


def s3_settings_env() -> dict[str, str]:
    """The object store this process uses now, as environment for a worker."""
    return {
        name: getattr(settings, name)
        for name in (
            "S3_ENDPOINT_URL",
            "S3_PUBLIC_BASE_URL",
            "S3_ACCESS_KEY_ID",
            "S3_SECRET_ACCESS_KEY",
        )
    }


@contextmanager
def s3_pointed_at(store: PrivateS3) -> Iterator[None]:
    """This process's settings and S3 client on `store`, its three buckets created."""
    from release.storage import buckets_ensure, s3_client

    with override_settings(
        S3_ENDPOINT_URL=store.url,
        S3_PUBLIC_BASE_URL=store.url,
        S3_ACCESS_KEY_ID=store.access_key,
        S3_SECRET_ACCESS_KEY=store.secret_key,
    ):
        s3_client.cache_clear()
        try:
            buckets_ensure()
            yield
        finally:
            s3_client.cache_clear()
    s3_client.cache_clear()


@contextmanager
def private_redis(folder: Path) -> Iterator[Redis]:
    server = Redis(data=folder, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _reset_celery_producer() -> None:
    # Celery keeps its broker connection and producer pools for the life of the process.
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def redis_pointed_at(server: Redis) -> Iterator[None]:
    """This process's cache, download throttle and Celery broker on `server`."""
    from config.redis_client import redis_client
    from release import distribution

    def forget_clients() -> None:
        redis_client.cache_clear()
        distribution._throttle_script.cache_clear()

    previous_broker = app.conf.broker_url
    with override_settings(
        REDIS_URL=server.url,
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": server.url,
            }
        },
    ):
        forget_clients()
        app.conf.broker_url = server.url
        _reset_celery_producer()
        try:
            yield
        finally:
            app.conf.broker_url = previous_broker
            _reset_celery_producer()
            forget_clients()
    forget_clients()


@contextmanager
def private_postgres() -> Iterator[Postgres]:
    """A PostgreSQL with a database `weightgate` (its `url`), in a folder under the system's temp
    folder, not pytest's: as root the server runs as another user, who must reach the folder,
    and pytest makes its own folders private again at the start of every session."""
    folder = Path(tempfile.mkdtemp(prefix="wg-postgres-"))
    server = Postgres(data=folder / "data", sockets=folder / "run", port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
