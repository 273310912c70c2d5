"""gRPC Inference service: chat and text completions for base models and the org's fine-tuned models."""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.basemodels import CATALOG
from tunery_common.grpc_errors import ServiceError, abort_with, invalid
from tunery_common.ids import new_id

from tunery_inference.engine_pool import EnginePool
from tunery_inference.engines.base import Engine, Prompt
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.outputs import Choice, Completion, Delta, TokenLogprob
from tunery_inference.engines.sampling import GenerationParams, ResponseFormat
from tunery_inference.metrics import InferenceMetrics
from tunery_inference.registry import ModelRegistry

log = logging.getLogger(__name__)


def model_not_found(model_id: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        f"The model {model_id!r} does not exist or you do not have access to it.",
        "model",
        "model_not_found",
    )


@dataclass(frozen=True)
class _Input:
    """What to complete: one prompt per entry, each getting `n` choices."""

    prompts: list[Prompt]
    tools: list[dict] | None = None
    echo: bool = False  # text prompts: each choice's text starts with its prompt
    id_prefix: str = "chatcmpl"


def _chat_input(request: inference_pb2.ChatCompletionRequest) -> _Input:
    if not request.messages:
        raise RequestError("messages must hold at least one message", "messages")
    tools = None
    if request.tools_json:
        try:
            tools = json.loads(request.tools_json)
        except ValueError as exc:
            raise RequestError(f"tools is not valid JSON: {exc}", "tools") from None
    return _Input([[_message(m) for m in request.messages]], tools)


def _message(message: common_pb2.ChatMessage) -> dict:
    """A message as chat templates take it: OpenAI's shape, with function arguments parsed, as
    Hugging Face templates expect them."""
    out: dict = {"role": message.role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _arguments(text: str) -> dict | str:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _text_input(request: inference_pb2.TextCompletionRequest) -> _Input:
    if not request.prompt:
        raise RequestError("prompt must hold at least one prompt", "prompt")
    if request.echo and request.logprobs:
        raise RequestError("echo with logprobs is not supported (it needs the prompt's logprobs)", "echo")
    return _Input(list(request.prompt), echo=request.echo, id_prefix="cmpl")


def usage_of(completions: list[Completion]) -> common_pb2.Usage:
    prompt = sum(c.prompt_tokens for c in completions)
    generated = sum(c.completion_tokens for c in completions)
    return common_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated
    )


def _logprobs_proto(entries: list[TokenLogprob]) -> list[inference_pb2.TokenLogprob]:
    return [
        inference_pb2.TokenLogprob(
            token=e.token,
            logprob=e.logprob,
            bytes=e.bytes,
            text_offset=e.text_offset,
            top_logprobs=[
                inference_pb2.TopLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes)
                for t in e.top_logprobs
            ],
        )
        for e in entries
    ]


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(
        self,
        engines: EnginePool,
        registry: ModelRegistry,
        default_max_tokens: int = 512,
        metrics: InferenceMetrics | None = None,
    ):
        self.engines = engines
        self.registry = registry
        registry.on_removed.append(engines.drop_adapter)  # a deleted model frees its adapter's memory
        self.default_max_tokens = default_max_tokens
        self.metrics = metrics or InferenceMetrics()
        self.metrics.track_prefix_caches(engines)

    async def _resolve(self, org: str, model_id: str) -> tuple[Engine, str | None]:
        """The engine of the model's base and the adapter to apply (None for a base model)."""
        if model_id in CATALOG:
            return await self.engines.get(model_id), None
        record = await self.registry.lookup(org, model_id)
        if record is None:
            raise model_not_found(model_id)
        engine = await self.engines.get(record.parent)
        # Named by the models-bucket id: a job's checkpoints are adapters of their own.
        if not engine.has_adapter(record.key_id):
            with self.metrics.adapter_loading(model_id, record.parent, record.key_id):
                path = await self.registry.adapter_path(record)
                try:
                    await asyncio.to_thread(engine.load_adapter, record.key_id, path)
                except (OSError, ValueError) as exc:  # an adapter this engine cannot serve
                    log.warning("model %s cannot be served: %s", model_id, exc)
                    raise ServiceError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"The model {model_id!r} cannot be served: {exc}",
                        "model",
                        "model_not_servable",
                    ) from None
        return engine, record.key_id

    def _params(self, request) -> GenerationParams:
        """The sampling fields, which chat and text requests share."""
        fmt = request.response_format
        return GenerationParams(
            max_tokens=request.max_tokens if request.HasField("max_tokens") else self.default_max_tokens,
            temperature=request.temperature if request.HasField("temperature") else 1.0,
            top_p=request.top_p if request.HasField("top_p") else 1.0,
            seed=request.seed if request.HasField("seed") else None,
            stop=list(request.stop),
            n=request.n or 1,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logit_bias=dict(request.logit_bias),
            logprobs=request.logprobs,
            top_logprobs=request.top_logprobs,
            response_format=ResponseFormat(fmt.type or "text", fmt.json_schema or None),
        )

    async def _start(self, request, build: Callable[..., _Input]) -> tuple[_Input, int, list]:
        """The input, n, and one engine stream per prompt; every refusal comes back as a ServiceError.

        The engine checks a request when a stream is made, before the first delta: a prompt over
        the context, a schema it cannot enforce, tools the chat template ignores, an adapter
        removed meanwhile.
        """
        timer = self.metrics.request(request.model)
        try:
            given = build(request)
            params = self._params(request)
            engine, adapter = await self._resolve(request.org, request.model)
            streams = await asyncio.to_thread(
                lambda: [
                    timer.timed(engine.stream(prompt, adapter, params, given.tools))
                    for prompt in given.prompts
                ]
            )
        except KeyError as exc:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND, str(exc.args[0]), "model", "model_not_found"
            ) from None
        except RequestError as exc:
            raise invalid(exc.message, exc.param, exc.code) from None
        return given, params.n, streams

    async def ChatCompletion(self, request, context):
        return await self._complete(request, context, _chat_input)

    async def TextCompletion(self, request, context):
        return await self._complete(request, context, _text_input)

    async def StreamChatCompletion(self, request, context):
        async for chunk in self._stream_chunks(request, context, _chat_input):
            yield chunk

    async def StreamTextCompletion(self, request, context):
        async for chunk in self._stream_chunks(request, context, _text_input):
            yield chunk

    async def _complete(self, request, context, build):
        try:
            given, n, streams = await self._start(request, build)
        except ServiceError as exc:
            await abort_with(context, exc)
            return
        try:
            completions = [await _last(stream) for stream in streams]
        finally:
            _close(streams)  # the client went away: stop generating
        choices = [
            inference_pb2.Choice(
                index=p * n + choice.index,
                text=(given.prompts[p] if given.echo else "") + choice.text,
                finish_reason=choice.finish_reason,
                logprobs=_logprobs_proto(choice.logprobs or []),
            )
            for p, completion in enumerate(completions)
            for choice in completion.choices
        ]
        return inference_pb2.CompletionResponse(
            id=new_id(given.id_prefix),
            model=request.model,
            content=choices[0].text,
            finish_reason=choices[0].finish_reason,
            usage=usage_of(completions),
            created=int(time.time()),
            choices=choices,
        )

    async def _stream_chunks(self, request, context, build):
        try:
            given, n, streams = await self._start(request, build)
        except ServiceError as exc:
            await abort_with(context, exc)
            return
        chunk_id, created = new_id(given.id_prefix), int(time.time())

        def chunk(**fields) -> inference_pb2.CompletionChunk:
            return inference_pb2.CompletionChunk(id=chunk_id, model=request.model, created=created, **fields)

        completions, started = [], set()
        try:
            for p, stream in enumerate(streams):
                async for item in stream:
                    if isinstance(item, Completion):
                        completions.append(item)
                        continue
                    index = p * n + item.index
                    if given.echo and index not in started:
                        yield chunk(index=index, delta=given.prompts[p])
                    started.add(index)
                    if isinstance(item, Delta):
                        yield chunk(index=index, delta=item.text, logprobs=_logprobs_proto(item.logprobs))
                    elif isinstance(item, Choice):
                        yield chunk(index=index, finish_reason=item.finish_reason)
        finally:
            _close(streams)  # the client went away: stop generating
        yield chunk(usage=usage_of(completions))

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


async def _last(stream) -> Completion:
    async for item in stream:
        last = item
    return last


def _close(streams: list) -> None:
    """Frees the engine of what is still running (a client that went away midway)."""
    for stream in streams:
        stream.close()
