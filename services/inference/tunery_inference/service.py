"""gRPC Inference service: chat completions for base models and the org's fine-tuned models."""

import asyncio
import logging
import time

import grpc
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.basemodels import CATALOG
from tunery_common.grpc_errors import ServiceError, abort_with, invalid
from tunery_common.ids import new_id

from tunery_inference.engine_pool import EnginePool
from tunery_inference.engines.hf import Completion, GenerationParams, HFEngine
from tunery_inference.registry import ModelRegistry

log = logging.getLogger(__name__)

_END = object()


def model_not_found(model_id: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        f"The model {model_id!r} does not exist or you do not have access to it.",
        "model",
        "model_not_found",
    )


def usage_of(completion: Completion) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(self, engines: EnginePool, registry: ModelRegistry, default_max_tokens: int = 512):
        self.engines = engines
        self.registry = registry
        self.default_max_tokens = default_max_tokens

    async def _resolve(self, org: str, model_id: str) -> tuple[HFEngine, str | None]:
        """The engine of the model's base and the adapter to apply (None for a base model)."""
        if model_id in CATALOG:
            return await self.engines.get(model_id), None
        record = await self.registry.lookup(org, model_id)
        if record is None:
            raise model_not_found(model_id)
        engine = await self.engines.get(record.parent)
        # Named by the models-bucket id: a job's checkpoints are adapters of their own.
        if not engine.has_adapter(record.key_id):
            path = await self.registry.adapter_path(record)
            await asyncio.to_thread(engine.load_adapter, record.key_id, path)
        return engine, record.key_id

    def _params(self, request) -> tuple[list[dict], GenerationParams]:
        if not request.messages:
            raise invalid("messages must hold at least one message", "messages")
        messages = [
            {"role": m.role, "content": m.content, **({"name": m.name} if m.name else {})}
            for m in request.messages
        ]
        try:
            params = GenerationParams(
                max_tokens=request.max_tokens if request.HasField("max_tokens") else self.default_max_tokens,
                temperature=request.temperature if request.HasField("temperature") else 1.0,
                top_p=request.top_p if request.HasField("top_p") else 1.0,
                seed=request.seed if request.HasField("seed") else None,
                stop=list(request.stop),
            )
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return messages, params

    async def _start(self, request, stream: bool):
        """The completion, or the stream of it; every refusal comes back as a ServiceError.

        The engine checks a request before generating (and a stream when it is made, before the
        first delta): a prompt over the context, or an adapter removed meanwhile.
        """
        messages, params = self._params(request)
        engine, adapter = await self._resolve(request.org, request.model)
        try:
            return await asyncio.to_thread(
                engine.stream if stream else engine.generate, messages, adapter, params
            )
        except KeyError as exc:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND, str(exc.args[0]), "model", "model_not_found"
            ) from None
        except ValueError as exc:
            raise invalid(str(exc), "messages", "context_length_exceeded") from None

    async def ChatCompletion(self, request, context):
        try:
            completion = await self._start(request, stream=False)
        except ServiceError as exc:
            await abort_with(context, exc)
            return
        return inference_pb2.ChatCompletionResponse(
            id=new_id("chatcmpl"),
            model=request.model,
            content=completion.text,
            finish_reason=completion.finish_reason,
            usage=usage_of(completion),
            created=int(time.time()),
        )

    async def StreamChatCompletion(self, request, context):
        try:
            stream = await self._start(request, stream=True)
        except ServiceError as exc:
            await abort_with(context, exc)
            return
        chunk_id, created = new_id("chatcmpl"), int(time.time())
        async for item in self._stream(stream):
            if isinstance(item, Completion):
                yield inference_pb2.ChatCompletionChunk(
                    id=chunk_id,
                    model=request.model,
                    finish_reason=item.finish_reason,
                    usage=usage_of(item),
                    created=created,
                )
            else:
                yield inference_pb2.ChatCompletionChunk(
                    id=chunk_id, model=request.model, delta=item, created=created
                )

    async def _stream(self, stream):
        """Runs the engine's blocking stream in a thread and hands its items to the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = False

        def produce():
            try:
                for item in stream:
                    if cancelled:
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                stream.close()
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        producer = asyncio.create_task(asyncio.to_thread(produce))
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancelled = True  # the client went away: stop generating
            await producer

    async def ListModels(self, request, context):
        return inference_pb2.ListModelsResponse(
            models=self._base_models() + [self._to_proto(r) for r in self.registry.models_of(request.org)]
        )

    async def GetModel(self, request, context):
        if request.id in CATALOG:
            return next(m for m in self._base_models() if m.id == request.id)
        record = await self.registry.lookup(request.org, request.id)
        if record is None:
            await abort_with(context, model_not_found(request.id))
            return
        return self._to_proto(record)

    @staticmethod
    def _base_models() -> list[inference_pb2.Model]:
        return [
            inference_pb2.Model(id=spec.id, created=spec.created, owned_by="tunery", status="ready")
            for spec in CATALOG.values()
        ]

    @staticmethod
    def _to_proto(record) -> inference_pb2.Model:
        return inference_pb2.Model(
            id=record.id,
            created=record.created_at,
            owned_by=record.org,
            parent=record.parent,
            status=record.status,
        )
