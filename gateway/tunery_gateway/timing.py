"""`Server-Timing` on every answer: the gateway's own time apart from the inference call's.

`gateway;dur=` is the time (ms) from the request reaching the app to its response headers,
less `upstream;dur=`, the time spent waiting on the inference service (until its reply, or a
stream's first message). Clients and load tests read what the gateway adds from it, without
the cost of their own HTTP library or any clock sync.
"""

import time

from starlette.datastructures import MutableHeaders, State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_UPSTREAM_KEY = "upstream_s"


def add_upstream(state: State, since: float) -> None:
    """Counts the time from `since` (a perf_counter reading) as spent waiting on a service."""
    elapsed = time.perf_counter() - since
    setattr(state, _UPSTREAM_KEY, getattr(state, _UPSTREAM_KEY, 0.0) + elapsed)


def server_timing(total_s: float, upstream_s: float) -> str:
    value = f"gateway;dur={(total_s - upstream_s) * 1000:.3f}"
    if upstream_s:
        value += f", upstream;dur={upstream_s * 1000:.3f}"
    return value


class ServerTiming:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                upstream_s = scope.get("state", {}).get(_UPSTREAM_KEY, 0.0)
                total_s = time.perf_counter() - started
                MutableHeaders(scope=message).append("server-timing", server_timing(total_s, upstream_s))
            await send(message)

        await self.app(scope, receive, send_timed)
