"""The deployment files, checked offline: infra/k8s against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict), infra/compose.yaml against the compose-spec schema
(check-jsonschema), infra/Dockerfile parsed (dockerfile-parse). Then bound to the code: every
variable they set is one config/settings.py (or the gunicorn config) reads, every required one is
given, secrets only as files, the workers consume exactly the queues tasks are routed to, one
beat, and the probes reach the health views through the security middleware."""

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import resolve
from dockerfile_parse import DockerfileParser

from config import health

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
COMPOSE = INFRA / "compose.yaml"
DOCKERFILE = INFRA / "Dockerfile"
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
# Never given as a plain value: only as NAME_FILE, a mounted secret.
SECRET_SETTINGS = {
    "SECRET_KEY",
    "SIGNING_MASTER_KEY",
    "DATABASE_URL",
    "S3_SECRET_ACCESS_KEY",
    "METRICS_TOKEN",
    "EMAIL_URL",
    "EMAIL_HOST_PASSWORD",
}
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]+")


# --- what the code reads ---------------------------------------------------------------------


def _env_reads(path: Path) -> tuple[set[str], set[str], set[str]]:
    """(names read through the settings helpers, names read from os.environ directly, names
    required: env_str without a default), from the module's source."""
    helpers, direct, required = set(), set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        if not ENV_NAME.fullmatch(first.value):
            continue
        func = node.func
        if isinstance(func, ast.Name) and (
            func.id.startswith("env_") or func.id in {"_signing_master_key", "_smtp_url"}
        ):
            helpers.add(first.value)
            if (func.id == "env_str" and len(node.args) == 1) or func.id == "_signing_master_key":
                required.add(first.value)
        elif (
            isinstance(func, ast.Attribute)
            and func.attr == "get"
            and isinstance(func.value, ast.Attribute)
            and func.value.attr == "environ"
        ):
            direct.add(first.value)
    return helpers, direct, required


SETTINGS_HELPER_NAMES, SETTINGS_DIRECT_NAMES, REQUIRED = _env_reads(ROOT / "config" / "settings.py")
_, GUNICORN_NAMES, _ = _env_reads(INFRA / "gunicorn.conf.py")
KNOWN = SETTINGS_HELPER_NAMES | SETTINGS_DIRECT_NAMES | GUNICORN_NAMES


def unknown_variables(names: set[str]) -> set[str]:
    """Names the code never reads. NAME_FILE works only for names read through the helpers."""
    return {
        name
        for name in names
        if name not in KNOWN
        and not (name.endswith("_FILE") and name.removesuffix("_FILE") in SETTINGS_HELPER_NAMES)
    }


def test_the_settings_scan_finds_what_settings_read():
    # The scan itself: if it found nothing, every check below would pass vacuously.
    assert {"SECRET_KEY", "DATABASE_URL", "S3_SECRET_ACCESS_KEY", "SIGNING_MASTER_KEY"} <= REQUIRED
    assert {"LOG_LEVEL", "ALLOWED_HOSTS", "CELERY_TRANSFER_QUEUE"} <= SETTINGS_HELPER_NAMES
    assert {"WEB_BIND", "WEB_CONCURRENCY"} <= GUNICORN_NAMES
    assert unknown_variables({"SECRET_KEY_FILE", "LOG_LEVEL", "WEB_BIND"}) == set()
    assert unknown_variables({"SECRET_KYE", "WEB_BIND_FILE"}) == {"SECRET_KYE", "WEB_BIND_FILE"}


def routed_queues() -> set[str]:
    return {settings.CELERY_TASK_DEFAULT_QUEUE} | {
        route["queue"] for route in settings.CELERY_TASK_ROUTES.values()
    }


def queues_of(command: list[str]) -> set[str]:
    for index, arg in enumerate(command):
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
        if arg in {"--queues", "-Q"}:
            return set(command[index + 1].split(","))
    return {settings.CELERY_TASK_DEFAULT_QUEUE}  # what a worker without --queues consumes


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs() -> dict[str, dict[str, Any]]:
    """Workload name -> pod spec, for Deployments and Jobs."""
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"]
        for obj in k8s_objects()
        if obj["kind"] in {"Deployment", "Job"}
    }


def configmap() -> Any:
    (data,) = [obj["data"] for obj in k8s_objects() if obj["kind"] == "ConfigMap"]
    return data


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", k8s_files(), ids=lambda path: path.name)
def test_kubernetes_manifest_is_valid(path, version):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_validation_refuses_a_misspelt_field():
    # The validator bites: a typo that kubectl would drop silently fails here.
    deployment = yaml.safe_load((K8S / "web-deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in k8s_files()} - {"secret.example.yaml"}
    images = {image["name"] for image in kustomization["images"]}
    for name, spec in pod_specs().items():
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["image"].split(":")[0] in images, name


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec["containers"]) + list(spec.get("initContainers", []))


def test_kubernetes_containers_run_locked_down_as_the_image_user():
    uid = image_uid()
    for name, spec in pod_specs().items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == uid, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in all_containers(spec):
            locked = container["securityContext"]
            assert locked["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert locked["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert locked["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert "memory" in container["resources"]["limits"], (name, container["name"])
            # The read-only root leaves /tmp (gunicorn, beat's schedule) to an emptyDir.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def k8s_environment(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "weightgate"
        env.update(configmap())
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


def test_kubernetes_sets_only_variables_the_code_reads_and_every_required_one():
    for name, spec in pod_specs().items():
        for container in all_containers(spec):
            env = k8s_environment(container)
            assert unknown_variables(set(env)) == set(), (name, container["name"])
            given = {key.removesuffix("_FILE") for key in env}
            assert given >= REQUIRED, (name, container["name"], REQUIRED - given)


def test_kubernetes_secrets_come_only_from_the_secret_as_files():
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    keys = set(example["stringData"])
    assert all("PLACEHOLDER" in value for value in example["stringData"].values())
    assert SECRET_SETTINGS.isdisjoint(configmap())
    for name, spec in pod_specs().items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in all_containers(spec):
            env = {item["name"]: item["value"] for item in container.get("env", [])}
            assert SECRET_SETTINGS.isdisjoint(env), (name, container["name"])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            for variable, value in env.items():
                if not variable.endswith("_FILE"):
                    continue
                folder, key = value.rsplit("/", 1)
                volume = volumes[mounts[folder]]
                assert volume["secret"]["secretName"] == example["metadata"]["name"]
                assert key in keys, (name, variable)


def test_kubernetes_placeholder_secrets_are_refused_at_start(monkeypatch):
    # Applying the example by mistake must not give a running service with known secrets.
    from config.settings import _signing_master_key

    values = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    assert len(values["secret-key"]) < 32  # settings refuse a shorter SECRET_KEY
    assert len(values["metrics-token"]) < 16  # and a shorter METRICS_TOKEN
    monkeypatch.setenv("PLACEHOLDER_MASTER_KEY", values["signing-master-key"])
    with pytest.raises(ImproperlyConfigured, match="not valid base64"):
        _signing_master_key("PLACEHOLDER_MASTER_KEY")


def test_kubernetes_workers_consume_exactly_the_routed_queues_and_one_beat_runs():
    workloads = {
        obj["metadata"]["name"]: obj for obj in k8s_objects() if obj["kind"] == "Deployment"
    }
    consumed: set[str] = set()
    beats = []
    for name, deployment in workloads.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            command = container.get("command", [])
            if command[:1] != ["celery"]:
                continue
            assert not {"--beat", "-B"} & set(command), name
            if "worker" in command:
                consumed |= queues_of(command)
            if "beat" in command:
                beats.append(deployment)
    assert consumed == routed_queues()
    (beat,) = beats
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    hpas = [obj for obj in k8s_objects() if obj["kind"] == "HorizontalPodAutoscaler"]
    assert beat["metadata"]["name"] not in {h["spec"]["scaleTargetRef"]["name"] for h in hpas}


def test_kubernetes_probes_hit_the_health_views():
    web = pod_specs()["weightgate-web"]["containers"][0]
    expected = {
        "readinessProbe": health.readyz,
        "livenessProbe": health.healthz,
        "startupProbe": health.healthz,
    }
    for probe, view in expected.items():
        assert resolve(web[probe]["httpGet"]["path"]).func is view, probe


def probe_headers(probe: dict[str, Any]) -> dict[str, str]:
    return {h["name"].lower(): h["value"] for h in probe["httpGet"].get("httpHeaders", [])}


@pytest.mark.django_db
def test_kubernetes_probes_pass_the_middleware_with_the_configmap_settings():
    """With the ConfigMap's ALLOWED_HOSTS and BEHIND_TLS_PROXY=1, a probe without the right
    Host is a 400 and one without X-Forwarded-Proto a redirect (which kubelet counts as a pass):
    the probes' own headers must get the real answer."""
    data = configmap()
    assert data["BEHIND_TLS_PROXY"] == "1"
    web = pod_specs()["weightgate-web"]["containers"][0]
    with override_settings(
        ALLOWED_HOSTS=data["ALLOWED_HOSTS"].split(","),
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
        SECURE_SSL_REDIRECT=True,
    ):
        client = Client()
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path, headers = web[probe]["httpGet"]["path"], probe_headers(web[probe])
            assert client.get(path, headers=headers).status_code == 200, probe
        bare = {"host": probe_headers(web["livenessProbe"])["host"]}
        assert client.get("/healthz", headers=bare).status_code == 301


# --- compose ---------------------------------------------------------------------------------


def compose() -> Any:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the x-app anchors and merge keys


def app_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if "WEIGHTGATE_IMAGE" in service.get("image", "")
    }


def compose_default(value: str) -> str:
    """`${NAME:-default}` as compose reads it when NAME is unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_is_valid_compose_spec(tmp_path):
    checked = check_compose_schema(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    broken = tmp_path / "compose.yaml"  # the check bites: a key compose does not know
    broken.write_text(
        COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restarts: always\n", 1)
    )
    assert check_compose_schema(broken).returncode != 0


def test_compose_sets_only_variables_the_code_reads_and_every_required_one():
    services = app_services()
    assert set(services) == {"migrate", "web", "worker-control", "worker-transfer", "beat"}
    for name, service in services.items():
        env = service["environment"]
        assert unknown_variables(set(env)) == set(), name
        given = {key.removesuffix("_FILE") for key in env}
        assert given >= REQUIRED, (name, REQUIRED - given)


def test_compose_secrets_are_files_never_values():
    top = compose()["secrets"]
    for name, service in app_services().items():
        env = service["environment"]
        assert SECRET_SETTINGS.isdisjoint(env), name
        for variable, value in env.items():
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in service["secrets"], (name, variable)
                assert secret in top, (name, variable)
                assert top[secret]["file"].startswith("./secrets/")
    ignored = (ROOT / ".gitignore").read_text().split() + (
        ROOT / ".dockerignore"
    ).read_text().split()
    assert "infra/secrets/" in ignored


def test_compose_workers_consume_exactly_the_routed_queues_and_one_beat_runs():
    consumed: set[str] = set()
    beats = []
    for name, service in app_services().items():
        command = service.get("command", [])
        if command[:1] != ["celery"]:
            continue
        assert not {"--beat", "-B"} & set(command), name
        if "worker" in command:
            consumed |= queues_of(command)
        if "beat" in command:
            beats.append(service)
    assert consumed == routed_queues()
    (beat,) = beats
    assert beat["deploy"]["replicas"] == 1
    assert beat["command"][beat["command"].index("beat") + 1].startswith("--schedule=/tmp/")


def test_compose_waits_for_migrations_and_health():
    services = compose()["services"]
    for name in ("web", "worker-control", "worker-transfer", "beat"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }, name
    migrate = services["migrate"]
    assert "manage.py migrate" in migrate["command"][-1]
    assert "manage.py storage_init" in migrate["command"][-1]
    for backing in ("postgres", "redis", "s3"):
        assert migrate["depends_on"][backing] == {"condition": "service_healthy"}
        assert "healthcheck" in services[backing]


def test_compose_web_healthcheck_asks_readyz_as_an_allowed_host():
    web = app_services()["web"]
    check = " ".join(web["healthcheck"]["test"])
    assert "/readyz" in check
    host = re.search(r"'Host': '([^']+)'", check)
    assert host is not None
    assert host.group(1) in compose_default(web["environment"]["ALLOWED_HOSTS"]).split(",")
    assert resolve("/readyz").func is health.readyz


def test_no_image_floats_on_latest():
    images = [service["image"] for service in compose()["services"].values()]
    images += [c["image"] for spec in pod_specs().values() for c in all_containers(spec)]
    for image in images:
        image = compose_default(image)
        assert ":" in image, image
        assert not image.endswith(":latest"), image


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def final_stage() -> Any:
    structure = dockerfile().structure
    last_from = max(i for i, item in enumerate(structure) if item["instruction"] == "FROM")
    return structure[last_from:]


def image_uid() -> int:
    (user,) = [item["value"] for item in final_stage() if item["instruction"] == "USER"]
    return int(user.split(":")[0])


def runs() -> list[str]:
    return [item["value"] for item in dockerfile().structure if item["instruction"] == "RUN"]


def test_dockerfile_is_multi_stage_on_pinned_slim_python():
    parsed = dockerfile()
    assert parsed.is_multistage
    for image in parsed.parent_images:
        assert ":" in image, image
        assert not image.endswith(":latest"), image
        assert "slim" in image, image


def test_dockerfile_final_stage_runs_as_a_fixed_non_root_user():
    stage = final_stage()
    assert [item["instruction"] for item in stage].count("USER") == 1
    uid = image_uid()
    assert uid >= 1000
    assert any(f"--uid {uid}" in item["value"] for item in stage if item["instruction"] == "RUN")
    # USER comes after the last RUN: nothing installed later runs as root by mistake.
    last_user = max(i for i, item in enumerate(stage) if item["instruction"] == "USER")
    assert all(item["instruction"] != "RUN" for item in stage[last_user:])


def test_dockerfile_installs_pinned_runtime_dependencies_only():
    installs = [run for run in runs() if "pip install" in run]
    assert installs == ["/opt/weightgate/bin/pip install -c constraints.txt ."]


def test_dockerfile_bakes_no_secret_in_and_serves_gunicorn_by_default():
    names = set()
    for item in dockerfile().structure:
        if item["instruction"] in {"ENV", "ARG"}:
            names |= {word.split("=")[0] for word in shlex.split(item["value"])}
    assert SECRET_SETTINGS.isdisjoint(names)
    assert not {name for name in names if re.search("SECRET|PASSWORD|TOKEN", name)}
    (cmd,) = [item["value"] for item in final_stage() if item["instruction"] == "CMD"]
    assert yaml.safe_load(cmd) == ["gunicorn", "config.wsgi", "--config", "/app/gunicorn.conf.py"]
    copies = [item["value"] for item in final_stage() if item["instruction"] == "COPY"]
    assert "infra/gunicorn.conf.py ./gunicorn.conf.py" in copies


def test_dockerignore_keeps_the_build_context_to_the_sources():
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"  # everything out, then only what the image needs back in
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert not allowed & {".venv", ".local", ".git", "tests", "bench"}
    for item in dockerfile().structure:
        if item["instruction"] == "COPY" and "--from=" not in item["value"]:
            for source in shlex.split(item["value"])[:-1]:
                assert (ROOT / source).exists(), source
                assert source.split("/")[0] in allowed, source


def test_dockerfile_collectstatic_step_works_with_only_its_dummy_settings(tmp_path):
    """The build step runs exactly as written, with no other settings to lean on (.local/env
    is switched off): settings accept its dummy values and every static file is collected."""
    (step,) = [run for run in runs() if "collectstatic" in run]
    words = shlex.split(step)
    assignments = dict(word.split("=", 1) for word in words if ENV_NAME.match(word.split("=")[0]))
    command = words[len(assignments) :]
    assert command[:3] == ["/opt/weightgate/bin/python", "-m", "django"]
    static_root = tmp_path / "static"
    env = {
        **assignments,
        "STATIC_ROOT": str(static_root),
        "WEIGHTGATE_ENV_FILE": str(tmp_path / "none"),
        "PATH": os.environ["PATH"],
    }
    collected = subprocess.run(
        [sys.executable, "-m", "django", *command[3:]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stderr
    assert (static_root / "staticfiles.json").is_file()
    assert (static_root / "portal" / "portal.css").is_file()


def test_the_wheel_carries_every_template_and_static_file():
    """The image installs the project as a wheel: every template and static file of the apps
    must match pyproject's package-data, or the portal and admin fail with missing templates."""
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["*"]
    for package in ("config", "release", "licensing"):
        base = ROOT / package
        shipped = {path for pattern in patterns for path in base.glob(pattern) if path.is_file()}
        present = {
            path
            for folder in ("templates", "static")
            for path in (base / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        assert present, package
        assert present <= shipped, sorted(map(str, present - shipped))
