"""The gateway served by uvicorn in a background thread, for tests that drive it over HTTP."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from openai import OpenAI
from tunery_gateway.main import create_app
from tunery_gateway.settings import GatewaySettings

STARTUP_TIMEOUT_S = 30


@contextmanager
def serve_gateway(settings: GatewaySettings) -> Iterator[str]:
    """Serves the app on a free port until the block ends; yields its base URL once healthy."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:  # set once the lifespan (NATS connect) finished and the port listens
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        yield url
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)


def openai_client(url: str, key: str = "k1") -> OpenAI:
    # No retries: a test sees the first answer, and 503s do not back off for seconds.
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
