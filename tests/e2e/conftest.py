"""The whole stack started through the launcher (`tunery up --random-ports`) in a temporary home."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from stack_keys import KEYS
from tunery_common.launcher import wait_until_healthy


@dataclass
class RunningStack:
    home: Path
    gateway_url: str
    nats_url: str
    state: dict

    @property
    def base_url(self) -> str:
        return f"{self.gateway_url}/v1"


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> RunningStack:
    home = tmp_path_factory.mktemp("tunery-home")
    env = {
        **os.environ,
        "TUNERY_HOME": str(home),
        "TUNERY_API_KEYS": ",".join(f"{key}:{org}" for org, key in KEYS.items()),
        "TUNERY_MAX_UPLOAD_MB": "2",
        "TUNERY_LOG_JSON": "false",
        # Two cores run five processes here: keep each one's torch to one thread.
        "OMP_NUM_THREADS": "1",
    }
    env.pop("TUNERY_NATS_URL", None)
    log = open(home / "launcher.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunery_common.cli", "up", "--random-ports", "--timeout", "300"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        state = wait_until_healthy(home, proc, 330)
    except Exception:
        proc.kill()
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((home / "logs").glob("*.log"))
        )
        pytest.fail(f"the stack did not start:\n{(home / 'launcher.log').read_text()}\n{logs}")
    yield RunningStack(home, state["gateway_url"], state["nats_url"], state)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
