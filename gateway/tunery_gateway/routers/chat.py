"""`/v1/chat/completions` over the inference service, whole or streamed as server-sent events."""

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from fastapi import APIRouter, Response
from tunery.inference.v1 import inference_pb2

from tunery_gateway.errors import model_error
from tunery_gateway.ratelimit_routes import InferenceGateDep
from tunery_gateway.schemas.base import json_response
from tunery_gateway.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
)
from tunery_gateway.schemas.sampling import Usage
from tunery_gateway.streaming import event_stream, open_stream

router = APIRouter(tags=["chat"])


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "chunks when `stream` is true"}},
)
async def create_chat_completion(body: ChatCompletionRequest, gate: InferenceGateDep) -> Response:
    request = body.to_proto(gate.org)
    admission = gate.admit(request)
    if not body.stream:
        try:
            call = gate.inference.ChatCompletion(request, timeout=gate.timeout_s)
            reply = await admission.settled(call)
        except grpc.aio.AioRpcError as exc:
            raise model_error(exc) from exc
        return json_response(ChatCompletion.from_proto(reply, bool(body.logprobs)))
    call = gate.inference.StreamChatCompletion(request, timeout=gate.timeout_s)
    messages = await admission.metered(open_stream(call))
    return event_stream(_chunks(messages, body))


async def _chunks(
    messages: AsyncIterator[inference_pb2.CompletionChunk], body: ChatCompletionRequest
) -> AsyncIterator[ChatCompletionChunk]:
    """OpenAI's chunk sequence per choice: role, content deltas, finish reason; then [usage]."""
    started: set[int] = set()
    async with aclosing(messages):
        async for message in messages:
            header = {"id": message.id, "created": message.created, "model": message.model}
            if message.HasField("usage"):  # the last message
                if body.include_usage:
                    yield ChatCompletionChunk(**header, choices=[], usage=Usage.from_proto(message.usage))
                continue
            index = message.index
            if index not in started:
                started.add(index)
                role = ChunkChoice(index=index, delta=Delta(role="assistant", content=""))
                yield ChatCompletionChunk(**header, choices=[role])
            if message.delta or message.logprobs:
                logprobs = ChoiceLogprobs.from_proto(message.logprobs) if body.logprobs else None
                content = ChunkChoice(index=index, delta=Delta(content=message.delta), logprobs=logprobs)
                yield ChatCompletionChunk(**header, choices=[content])
            if message.finish_reason:
                finish = ChunkChoice(index=index, delta=Delta(), finish_reason=message.finish_reason)
                yield ChatCompletionChunk(**header, choices=[finish])
