"""Completions streamed as server-sent events from an inference gRPC stream.

The first message is awaited before answering: until then a failure (unknown model, bad
parameter) is still a plain error response with its HTTP status.
"""

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from tunery.inference.v1 import inference_pb2

from tunery_gateway.errors import from_rpc_error, model_error, raise_openai_error

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def open_stream(call: grpc.aio.UnaryStreamCall) -> AsyncIterator[inference_pb2.CompletionChunk]:
    """The call's messages, once the first one arrived; the call is cancelled when the consumer
    stops early (the client went away), which stops generation."""
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        raise model_error(exc) from exc
    if first is grpc.aio.EOF:
        raise_openai_error(502, "service inference ended the stream without output")

    async def messages() -> AsyncIterator[inference_pb2.CompletionChunk]:
        message = first
        try:
            while message is not grpc.aio.EOF:
                yield message
                message = await call.read()
        finally:
            call.cancel()  # a no-op once finished

    return messages()


def event_stream(payloads: AsyncIterator[BaseModel]) -> StreamingResponse:
    return StreamingResponse(_events(payloads), media_type="text/event-stream", headers=_SSE_HEADERS)


async def _events(payloads: AsyncIterator[BaseModel]) -> AsyncIterator[str]:
    try:
        async with aclosing(payloads):  # closing it cancels the call when the client went away
            async for payload in payloads:
                yield f"data: {payload.model_dump_json()}\n\n"
    except grpc.aio.AioRpcError as exc:
        # Headers are gone: the error travels as an event, which the openai SDK raises.
        yield f"data: {json.dumps(from_rpc_error(exc, 'inference').body())}\n\n"
        return
    yield "data: [DONE]\n\n"
