"""The embedded stack: NATS, the four services and the gateway as supervised processes.

Like Kubernetes would, the supervisor restarts a process that dies (with back-off) and stops
everything on SIGTERM/SIGINT. Its state (pid, addresses, health) is in TUNERY_HOME/stack.json so
`tunery up --detach` can wait for it and `tunery down` can stop it.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunery_common.apikeys import ensure_internal_key
from tunery_common.natsserver import free_port, start_nats

log = logging.getLogger("tunery.launcher")

# name, module, env var of its address
SERVICES = [
    ("data-prep", "tunery_dataprep.main", "TUNERY_DATAPREP_ADDR"),
    ("trainer", "tunery_trainer.main", "TUNERY_TRAINER_ADDR"),
    ("eval-judge", "tunery_evaljudge.main", "TUNERY_EVALJUDGE_ADDR"),
    ("inference", "tunery_inference.main", "TUNERY_INFERENCE_ADDR"),
]
DEFAULT_PORTS = {"data-prep": 50051, "trainer": 50052, "eval-judge": 50053, "inference": 50054}
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a process that ran this long starts its back-off afresh


def stack_file(home: Path) -> Path:
    return home / "stack.json"


def read_stack(home: Path) -> dict | None:
    try:
        return json.loads(stack_file(home).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


@dataclass
class Supervised:
    name: str
    argv: list[str]
    log_path: Path
    health: str  # "grpc:<addr>" or "http:<url>"
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    next_start: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()

    def healthy(self) -> bool:
        kind, _, target = self.health.partition(":")
        if kind == "grpc":
            with grpc.insecure_channel(target) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                except grpc.RpcError:
                    return False
                return reply.status == health_pb2.HealthCheckResponse.SERVING
        try:
            return httpx.get(target, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class StackConfig:
    home: Path
    host: str = "127.0.0.1"
    gateway_port: int = 8000
    nats_url: str | None = None  # None: start the embedded server
    nats_port: int = 4222
    service_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    api_keys: str = ""
    startup_timeout_s: float = 300.0

    @classmethod
    def with_random_ports(cls, home: Path, **kwargs) -> "StackConfig":
        return cls(
            home=home,
            gateway_port=free_port(),
            nats_port=free_port(),
            service_ports={name: free_port() for name, _, _ in SERVICES},
            **kwargs,
        )


class Stack:
    def __init__(self, config: StackConfig):
        self.config = config
        self.home = config.home.resolve()
        self.nats_proc: subprocess.Popen | None = None
        self.nats_url = config.nats_url or f"nats://127.0.0.1:{config.nats_port}"
        self.gateway_url = f"http://{config.host}:{config.gateway_port}"
        self.processes: list[Supervised] = []
        self._stopping = False
        self.state = "starting"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TUNERY_HOME=str(self.home),
            TUNERY_NATS_URL=self.nats_url,
            TUNERY_API_KEYS=self.config.api_keys,
            TUNERY_HOST=self.config.host,
            TUNERY_PORT=str(self.config.gateway_port),
            PYTHONUNBUFFERED="1",
        )
        # The key eval-judge's judge calls the gateway with, exempt from users' rate limits.
        env.setdefault("TUNERY_INTERNAL_API_KEY", ensure_internal_key(self.home))
        for name, _, var in SERVICES:
            env[var] = f"127.0.0.1:{self.config.service_ports[name]}"
        return env

    def _build(self) -> None:
        logs = self.home / "logs"
        self.processes = [
            Supervised(
                name,
                [sys.executable, "-m", module],
                logs / f"{name}.log",
                f"grpc:127.0.0.1:{self.config.service_ports[name]}",
            )
            for name, module, _ in SERVICES
        ]
        self.processes.append(
            Supervised(
                "gateway",
                [sys.executable, "-m", "tunery_gateway.main"],
                logs / "gateway.log",
                f"http:{self.gateway_url}/healthz",
            )
        )

    def _write_state(self, state: str) -> None:
        info = {
            "pid": os.getpid(),
            "state": state,
            "gateway_url": self.gateway_url,
            "nats_url": self.nats_url,
            "addrs": {name: f"127.0.0.1:{self.config.service_ports[name]}" for name, _, _ in SERVICES},
            "pids": {p.name: p.proc.pid for p in self.processes if p.proc is not None},
            "restarts": {p.name: p.restarts for p in self.processes},
        }
        tmp = stack_file(self.home).with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(stack_file(self.home))

    def _start_nats(self) -> None:
        with open(self.home / "logs" / "nats.log", "ab") as out:
            self.nats_proc = start_nats(self.config.nats_port, self.home / "jetstream", out)

    def start(self) -> None:
        """Starts everything and returns once every health check passes."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self._write_state(self.state)
        if self.config.nats_url is None:
            log.info("starting nats-server -js on port %d", self.config.nats_port)
            self._start_nats()
        self._build()
        env = self.env()
        for proc in self.processes:
            proc.start(env)
        deadline = time.monotonic() + self.config.startup_timeout_s
        pending = list(self.processes)
        while pending:
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in pending)
                raise TimeoutError(
                    f"{names} not healthy after {self.config.startup_timeout_s:.0f}s; see {self.home}/logs"
                )
            self.supervise_once()
            pending = [p for p in pending if not p.healthy()]
            if pending:
                time.sleep(0.3)
        self.state = "healthy"
        self._write_state(self.state)

    def supervise_once(self) -> None:
        """Restarts processes that died, each after its back-off."""
        now = time.monotonic()
        for proc in self.processes:
            if proc.proc is None or proc.proc.poll() is None or self._stopping:
                continue
            if proc.next_start == 0.0:
                if now - proc.started_at > STABLE_AFTER_S:
                    proc.backoff_s = 1.0
                proc.next_start = now + proc.backoff_s
                log.warning(
                    "%s exited with code %s; restarting in %.0fs (log: %s)",
                    proc.name,
                    proc.proc.returncode,
                    proc.backoff_s,
                    proc.log_path,
                )
                proc.backoff_s = min(proc.backoff_s * 2, MAX_BACKOFF_S)
            elif now >= proc.next_start:
                proc.restarts += 1
                proc.next_start = 0.0
                proc.start(self.env())
                log.info("%s restarted (restart %d)", proc.name, proc.restarts)
                self._write_state(self.state)

    def run_forever(self, should_stop) -> None:
        while not should_stop():
            self.supervise_once()
            if self.nats_proc is not None and self.nats_proc.poll() is not None:
                log.error("nats-server exited with code %s; restarting it", self.nats_proc.returncode)
                self._start_nats()
            time.sleep(0.5)

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping = True
        running = [p.proc for p in self.processes if p.proc is not None and p.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.nats_proc is not None:
            self.nats_proc.terminate()
            try:
                self.nats_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.nats_proc.kill()
        stack_file(self.home).unlink(missing_ok=True)


def wait_until_healthy(home: Path, launcher: subprocess.Popen, timeout: float) -> dict:
    """For `up --detach`: waits until the supervisor reports healthy (or dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_stack(home)
        if state and state.get("state") == "healthy" and state.get("pid") == launcher.pid:
            return state
        if launcher.poll() is not None:
            raise RuntimeError(
                f"the stack failed to start (exit code {launcher.returncode}); see {home}/logs/launcher.log"
            )
        time.sleep(0.3)
    raise TimeoutError(f"the stack was not healthy after {timeout:.0f}s; see {home}/logs")


def stop_detached(home: Path, timeout: float = 60.0) -> bool:
    """Stops the stack whose supervisor is recorded under `home`; False when none runs."""
    state = read_stack(home)
    if not state or not pid_alive(state["pid"]):
        stack_file(home).unlink(missing_ok=True)
        return False
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return True
