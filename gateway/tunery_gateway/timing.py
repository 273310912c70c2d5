"""`Server-Timing` on every answer: the gateway's own time apart from the inference call's.

`gateway;dur=` is the time (ms) from the request reaching the app to its response headers,
less `upstream;dur=`, the time spent waiting on the inference service (until its reply, or a
stream's first message). Clients and load tests read what the gateway adds from it, without
the cost of their own HTTP library or any clock sync.
"""

import time

from starlette.datastructures import MutableHeaders, State
from starlette.types import Scope

from tunery_gateway.response_headers import ResponseHeaders

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


class ServerTiming(ResponseHeaders):
    def started(self, scope: Scope) -> float:
        return time.perf_counter()

    def add(self, scope: Scope, headers: MutableHeaders, noted: float) -> None:
        upstream_s = scope.get("state", {}).get(_UPSTREAM_KEY, 0.0)
        headers.append("server-timing", server_timing(time.perf_counter() - noted, upstream_s))
