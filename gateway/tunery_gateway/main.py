"""The gateway process: the app factory and its entry point (`python -m tunery_gateway.main`)."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import ValidationError
from tunery.dataprep.v1 import dataprep_pb2_grpc
from tunery.evaljudge.v1 import evaljudge_pb2_grpc
from tunery.inference.v1 import inference_pb2_grpc
from tunery.trainer.v1 import trainer_pb2_grpc
from tunery_common.apikeys import ApiKeyError
from tunery_common.bus import Bus
from tunery_common.logs import setup_logging

from tunery_gateway.errors import install_error_handlers
from tunery_gateway.limits import RequestSizeLimit
from tunery_gateway.ratelimit import RateLimiter
from tunery_gateway.ratelimit_routes import RateLimitHeaders
from tunery_gateway.routers import (
    chat,
    completions,
    cost,
    datasets,
    evals,
    files,
    fine_tuning,
    health,
    models,
)
from tunery_gateway.settings import GatewaySettings
from tunery_gateway.timing import ServerTiming

log = logging.getLogger("tunery_gateway")  # not __main__ under `python -m`

# As large as the services accept: chat histories and job listings can be big.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    if not settings.api_keys:
        log.info("TUNERY_API_KEYS is empty: the 'default' org's key is in %s", settings.home / "api_key")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.bus = await Bus.connect(settings.nats_url, "gateway")
            stack.push_async_callback(app.state.bus.close)
            # Channels connect lazily: the gateway starts before (or without) the services.
            trainer = grpc.aio.insecure_channel(settings.trainer_addr, options=_CHANNEL_OPTIONS)
            stack.push_async_callback(trainer.close)
            inference = grpc.aio.insecure_channel(settings.inference_addr, options=_CHANNEL_OPTIONS)
            stack.push_async_callback(inference.close)
            evaljudge = grpc.aio.insecure_channel(settings.evaljudge_addr, options=_CHANNEL_OPTIONS)
            stack.push_async_callback(evaljudge.close)
            app.state.trainer = trainer_pb2_grpc.TrainerStub(trainer)
            app.state.evaljudge = evaljudge_pb2_grpc.EvalJudgeStub(evaljudge)
            app.state.inference = inference_pb2_grpc.InferenceStub(inference)
            dataprep = grpc.aio.insecure_channel(settings.dataprep_addr, options=_CHANNEL_OPTIONS)
            stack.push_async_callback(dataprep.close)
            app.state.dataprep = dataprep_pb2_grpc.DataPrepStub(dataprep)
            log.info("gateway ready", extra={"fields": {"nats": settings.nats_url}})
            gc.freeze()  # start-up's objects live as long as the process: no collection walks them
            yield

    app = FastAPI(title="Tunery", summary="OpenAI-compatible fine-tuning API", lifespan=lifespan)
    app.state.settings = settings
    app.state.api_keys = settings.load_api_keys()
    app.state.rate_limiter = RateLimiter(settings.rate_limit_config())  # in-process: per gateway replica
    install_error_handlers(app)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_mb << 20, exempt_prefix="/v1/files")
    app.add_middleware(ServerTiming)
    if settings.cors_origins:  # added last, so outermost: browsers can read every answer, 413s included
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.include_router(health.router)
    # Routes are matched in order: the inference ones, hit most, first.
    for router in (
        chat.router,
        completions.router,
        models.router,
        files.router,
        fine_tuning.router,
        evals.router,
        datasets.router,
        cost.router,
    ):
        app.include_router(router, prefix="/v1")
    return app


def main() -> None:
    try:
        settings = GatewaySettings()
        setup_logging("gateway", settings.log_level, settings.log_json)
        app = create_app(settings)
    except (ValidationError, ApiKeyError) as exc:
        raise SystemExit(f"tunery gateway: bad configuration: {exc}") from None
    # log_config=None: uvicorn's records go through the JSON handler set up above.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
