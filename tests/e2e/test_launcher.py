"""The launcher behaves like an orchestrator: restarts a killed service, detaches, stops cleanly."""

import os
import signal
import subprocess
import sys
import time

import pytest
from tunery_common.grpc_server import check_health
from tunery_common.launcher import pid_alive, read_stack

pytestmark = pytest.mark.e2e


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_a_killed_service_is_restarted(stack):
    import asyncio

    before = read_stack(stack.home)
    victim = before["pids"]["eval-judge"]
    os.kill(victim, signal.SIGKILL)
    after = wait_until(
        lambda: (s := read_stack(stack.home)) and s["pids"]["eval-judge"] != victim and s,
        60,
        "a restarted eval-judge",
    )
    assert after["restarts"]["eval-judge"] == before["restarts"]["eval-judge"] + 1
    addr = after["addrs"]["eval-judge"]
    wait_until(lambda: asyncio.run(check_health(addr)), 60, "eval-judge to serve again")
    log = (stack.home / "logs" / "eval-judge.log").read_text()
    assert log.count("eval-judge ready") >= 2


def test_detach_and_down(tmp_path):
    env = {**os.environ, "TUNERY_HOME": str(tmp_path), "TUNERY_LOG_JSON": "false", "OMP_NUM_THREADS": "1"}
    env.pop("TUNERY_NATS_URL", None)
    env.pop("TUNERY_API_KEYS", None)
    cli = [sys.executable, "-m", "tunery_common.cli"]
    up = subprocess.run(
        [*cli, "up", "--detach", "--random-ports", "--timeout", "240"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr
    key = (tmp_path / "api_key").read_text().strip()
    assert key in up.stderr and "Tunery is up" in up.stderr
    state = read_stack(tmp_path)
    assert state["state"] == "healthy" and pid_alive(state["pid"])
    children = list(state["pids"].values())

    down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "stopped" in down.stderr
    assert not pid_alive(state["pid"])
    assert not any(pid_alive(pid) for pid in children)
    assert read_stack(tmp_path) is None
