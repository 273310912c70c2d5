"""Fixtures shared by all test levels: a real NATS server, the tiny model cache."""

import os
import subprocess
from pathlib import Path

import pytest
from tunery_common.natsserver import free_port, start_nats

# Built models are cached per machine, like `make install` does, so tests build them once.
MODEL_CACHE = Path(os.environ.get("TUNERY_MODEL_CACHE", Path.home() / ".cache" / "tunery" / "models"))


@pytest.fixture
def nats_url(tmp_path):
    port = free_port()
    proc = start_nats(port, tmp_path / "jetstream")
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return MODEL_CACHE
