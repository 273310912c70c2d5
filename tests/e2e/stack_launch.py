"""Starting a whole stack through the launcher (`tunery up --random-ports`) in a given home."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
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


@contextmanager
def launched_stack(
    home: Path, keys: dict[str, str], extra_env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """`tunery up --random-ports` in `home` with one API key per org, stopped on exit;
    `extra_env` adds settings for its processes (e.g. TUNERY_TRAINER_PROVIDERS)."""
    env = {
        **os.environ,
        "TUNERY_HOME": str(home),
        "TUNERY_API_KEYS": ",".join(f"{key}:{org}" for org, key in keys.items()),
        "TUNERY_MAX_UPLOAD_MB": "2",
        "TUNERY_LOG_JSON": "false",
        # Two cores run five processes here: keep each one's torch to one thread.
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
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
    try:
        yield RunningStack(home, state["gateway_url"], state["nats_url"], state)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
