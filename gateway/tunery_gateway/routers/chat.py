"""`/v1/chat/completions` over the inference service, whole or streamed as server-sent events."""

import json
from collections.abc import AsyncIterator

import grpc
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from tunery.inference.v1 import inference_pb2

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import InferenceDep, SettingsDep
from tunery_gateway.errors import from_rpc_error, model_error, raise_openai_error
from tunery_gateway.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
    Usage,
)

router = APIRouter(tags=["chat"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "chunks when `stream` is true"}},
)
async def create_chat_completion(
    body: ChatCompletionRequest, org: Org, inference: InferenceDep, settings: SettingsDep
) -> ChatCompletion | StreamingResponse:
    request = body.to_proto(org)
    if not body.stream:
        try:
            reply = await inference.ChatCompletion(request, timeout=settings.request_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise model_error(exc) from exc
        return ChatCompletion.from_proto(reply)

    call = inference.StreamChatCompletion(request, timeout=settings.request_timeout_s)
    # Wait for the first chunk: until then a failure (unknown model...) is still a plain error response.
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        raise model_error(exc) from exc
    if first is grpc.aio.EOF:
        raise_openai_error(502, "service inference ended the stream without output")
    return StreamingResponse(
        _events(call, first, body.include_usage), media_type="text/event-stream", headers=_SSE_HEADERS
    )


def _sse(payload: BaseModel) -> str:
    return f"data: {payload.model_dump_json()}\n\n"


async def _events(
    call: grpc.aio.UnaryStreamCall, first: inference_pb2.ChatCompletionChunk, include_usage: bool
) -> AsyncIterator[str]:
    """OpenAI's chunk sequence: role, content deltas, finish reason with usage, [usage], [DONE]."""

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=first.id, created=first.created, model=first.model, choices=choices, usage=usage
        )

    yield _sse(chunk([ChunkChoice(delta=Delta(role="assistant", content=""))]))
    message, last = first, first
    try:
        while message is not grpc.aio.EOF:
            if message.delta:
                yield _sse(chunk([ChunkChoice(delta=Delta(content=message.delta))]))
            last = message
            message = await call.read()
    except grpc.aio.AioRpcError as exc:
        # Headers are gone: the error travels as an event, which the openai SDK raises.
        yield f"data: {json.dumps(from_rpc_error(exc, 'inference').body())}\n\n"
        return
    finally:
        call.cancel()  # a no-op once finished; stops generation when the client went away
    usage = Usage.from_proto(last.usage)
    yield _sse(chunk([ChunkChoice(delta=Delta(), finish_reason=last.finish_reason or "stop")], usage))
    if include_usage:
        yield _sse(chunk([], usage))
    yield "data: [DONE]\n\n"
