"""inference process: `python -m tunery_inference.main`."""

import asyncio
import logging
from contextlib import AsyncExitStack

from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.service_main import service_main
from tunery_common.settings import CommonSettings, grpc_port

from tunery_inference.engine_pool import EnginePool
from tunery_inference.metrics import InferenceMetrics, serve_metrics
from tunery_inference.registry import ModelRegistry
from tunery_inference.service import InferenceService
from tunery_inference.settings import InferenceSettings


def main() -> None:
    common = CommonSettings()
    settings = InferenceSettings()

    async def setup(bus: Bus, stack: AsyncExitStack):
        registry = ModelRegistry(bus, settings.adapter_dir or common.home / "inference" / "adapters")
        watch = asyncio.create_task(registry.watch())
        stack.callback(watch.cancel)
        engines = EnginePool(common.model_cache, settings)
        stack.callback(engines.close)  # vLLM engines run processes of their own
        for base in filter(None, (b.strip() for b in settings.preload.split(","))):
            await engines.get(base)
        metrics = InferenceMetrics()
        if settings.metrics_port is not None:
            server = serve_metrics(metrics, settings.metrics_port)
            logging.getLogger("inference").info("metrics on http://0.0.0.0:%d/metrics", server.server_port)
        service = InferenceService(engines, registry, settings.default_max_tokens, metrics)
        name = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
        return [(inference_pb2_grpc.add_InferenceServicer_to_server, service, name)]

    service_main("inference", common, grpc_port(common.inference_addr), setup)


if __name__ == "__main__":
    main()
