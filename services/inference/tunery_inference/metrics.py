"""Prometheus metrics of the inference service, recorded around any engine's streams.

The gRPC service wraps each engine stream in `timed`, so every engine gets the same metrics:
time to first token, inter-token latency, tokens in and out, requests waiting for their first
token, adapters resident and their load time, prefix cache hits. Served over HTTP by `serve_metrics`
(TUNERY_INFERENCE_METRICS_PORT); tokens/s is `rate(tunery_inference_output_tokens_total[1m])`.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

from tunery_inference.engines.outputs import Completion, Delta
from tunery_inference.engines.streams import EngineStream

# From a few ms (a token on a GPU) to minutes (a long prompt queued on a CPU).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class InferenceMetrics:
    """The metric families, in a registry of their own (tests run several services in a process)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tunery_inference_requests", "Completion requests started", ["model"], registry=r
        )
        self.time_to_first_token = Histogram(
            "tunery_inference_time_to_first_token_seconds",
            "From the request's arrival to its first generated token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "tunery_inference_inter_token_latency_seconds",
            "Between successive streamed deltas of a request (one token each, unless text is held back)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.output_tokens = Counter(
            "tunery_inference_output_tokens", "Generated (completion) tokens", ["model"], registry=r
        )
        self.prompt_tokens = Counter(
            "tunery_inference_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "tunery_inference_queue_depth",
            "Generations handed to the engine and waiting for their first token",
            ["model"],
            registry=r,
        )
        self.resident_adapters = Gauge(
            "tunery_inference_resident_adapters",
            "LoRA adapters loaded by this replica, per base model",
            ["base_model"],
            registry=r,
        )
        self.adapter_load = Histogram(
            "tunery_inference_adapter_load_seconds",
            "Fetching and loading a model's adapter before its first request",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self._resident: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def track_prefix_caches(self, engines) -> None:
        """Reports the prefix caches of the pool's engines (those that have one) at each scrape."""
        self.registry.register(_PrefixCacheCollector(engines))

    def request(self, model: str) -> "RequestTimer":
        """Starts timing one request (call as it arrives, before the model is resolved)."""
        self.requests.labels(model).inc()
        return RequestTimer(self, model)

    @contextmanager
    def adapter_loading(self, model: str, base_model: str, adapter: str) -> Iterator[None]:
        """Times an adapter load; once it succeeded the adapter counts as resident."""
        started = time.perf_counter()
        yield
        self.adapter_load.labels(model).observe(time.perf_counter() - started)
        with self._lock:
            resident = self._resident.setdefault(base_model, set())
            resident.add(adapter)
            self.resident_adapters.labels(base_model).set(len(resident))


class _PrefixCacheCollector:
    """The counters each engine keeps, read when /metrics is scraped."""

    def __init__(self, engines) -> None:
        self._engines = engines

    def collect(self) -> Iterator[CounterMetricFamily]:
        hits = CounterMetricFamily(
            "tunery_inference_prefix_cache_hits",
            "Prompts that started from the cached KV of an earlier prompt's prefix",
            labels=["base_model"],
        )
        reused = CounterMetricFamily(
            "tunery_inference_prefix_cache_tokens_reused",
            "Prompt tokens not prefilled thanks to the prefix cache",
            labels=["base_model"],
        )
        for base_model, engine in self._engines.loaded().items():
            cache = getattr(engine, "prefix_cache", None)
            if cache is not None:
                hits.add_metric([base_model], cache.hits)
                reused.add_metric([base_model], cache.tokens_reused)
        yield hits
        yield reused


class RequestTimer:
    """One request's token timings; its streams are read one at a time."""

    def __init__(self, metrics: InferenceMetrics, model: str):
        self.metrics = metrics
        self.model = model
        self.started = time.perf_counter()
        self.last_token_at: float | None = None

    def timed(self, stream: EngineStream) -> "TimedStream":
        return TimedStream(stream, self)

    def on_item(self, item: object) -> None:
        if isinstance(item, Delta):
            now = time.perf_counter()
            if self.last_token_at is None:
                self.metrics.time_to_first_token.labels(self.model).observe(now - self.started)
            else:
                self.metrics.inter_token_latency.labels(self.model).observe(now - self.last_token_at)
            self.last_token_at = now
        elif isinstance(item, Completion):
            self.metrics.output_tokens.labels(self.model).inc(item.completion_tokens)
            self.metrics.prompt_tokens.labels(self.model).inc(item.prompt_tokens)


class TimedStream:
    """An engine stream that reports its items; queued from creation until its first item or close.

    A class, not a generator: closing a generator that never started would not close the engine's
    stream inside it.
    """

    def __init__(self, stream: EngineStream, timer: RequestTimer):
        self._stream = stream
        self._timer = timer
        self._queued = True
        self._queued_lock = threading.Lock()  # __del__ may run on any thread
        timer.metrics.queue_depth.labels(timer.model).inc()

    def __aiter__(self) -> "TimedStream":
        return self

    async def __anext__(self):
        try:
            item = await self._stream.__anext__()
        finally:
            self._leave_queue()
        self._timer.on_item(item)
        return item

    def close(self) -> None:
        self._leave_queue()
        self._stream.close()

    def __del__(self) -> None:  # a stream dropped unread (a sibling prompt failed to start)
        self._leave_queue()

    def _leave_queue(self) -> None:
        with self._queued_lock:
            if not self._queued:
                return
            self._queued = False
        self._timer.metrics.queue_depth.labels(self._timer.model).dec()


def serve_metrics(metrics: InferenceMetrics, port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serves /metrics over HTTP in a daemon thread (port 0: a free one, see `server_port`)."""
    server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    return server
