"""The inference path in one process: real NATS (from the test's `nats_url`), the model registry,
the inference gRPC service (HF engine on the tiny model) and the gateway in front of it."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway_harness import serve_gateway
from tunery.inference.v1 import inference_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_gateway.settings import GatewaySettings
from tunery_inference.engine_pool import EnginePool
from tunery_inference.metrics import InferenceMetrics
from tunery_inference.registry import ModelRegistry
from tunery_inference.service import InferenceService


@dataclass
class InferenceStack:
    bus: Bus
    registry: ModelRegistry
    metrics: InferenceMetrics
    url: str  # the gateway

    async def applied(self) -> None:
        """Waits until the registry has seen the latest models-bucket change (a published model)."""
        await self.registry.wait_applied((await self.bus.models.kv.status()).stream_info.state.last_seq)


@asynccontextmanager
async def inference_stack(
    nats_url: str, model_cache: Path, tmp_path: Path, engines: EnginePool | None = None, **gateway_settings
) -> AsyncIterator[InferenceStack]:
    """API keys come from TUNERY_API_KEYS (set it with monkeypatch before entering). `engines`:
    the engine pool to serve with (default: the pool's engine choice over `model_cache`)."""
    bus = await Bus.connect(nats_url, "test")
    registry = ModelRegistry(bus, tmp_path / "adapters")
    watch = asyncio.create_task(registry.watch())
    await registry.ready.wait()
    metrics = InferenceMetrics()
    service = InferenceService(engines or EnginePool(model_cache), registry, metrics=metrics)
    server = await start_grpc_server(
        0, [(inference_pb2_grpc.add_InferenceServicer_to_server, service, "Inference")]
    )
    settings = GatewaySettings(
        nats_url=nats_url,
        home=tmp_path / "home",
        inference_addr=f"127.0.0.1:{server.port}",
        **gateway_settings,
    )
    try:
        with serve_gateway(settings) as url:
            yield InferenceStack(bus, registry, metrics, url)
    finally:
        await server.stop(0)
        watch.cancel()
        await bus.close()
