"""`/v1/completions`: raw prompts (no chat template), whole or streamed as server-sent events."""

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from fastapi import APIRouter, Response
from tunery.inference.v1 import inference_pb2

from tunery_gateway.errors import model_error
from tunery_gateway.ratelimit_routes import InferenceGateDep
from tunery_gateway.schemas.base import json_response
from tunery_gateway.schemas.completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from tunery_gateway.schemas.sampling import Usage
from tunery_gateway.streaming import event_stream, open_stream

router = APIRouter(tags=["completions"])


@router.post(
    "/completions",
    response_model=Completion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "chunks when `stream` is true"}},
)
async def create_completion(body: CompletionRequest, gate: InferenceGateDep) -> Response:
    request = body.to_proto(gate.org)
    admission = gate.admit(request)
    if not body.stream:
        try:
            call = gate.inference.TextCompletion(request, timeout=gate.timeout_s)
            reply = await admission.settled(call)
        except grpc.aio.AioRpcError as exc:
            raise model_error(exc) from exc
        return json_response(Completion.from_proto(reply, body.logprobs is not None))
    call = gate.inference.StreamTextCompletion(request, timeout=gate.timeout_s)
    messages = await admission.metered(open_stream(call))
    return event_stream(_chunks(messages, body))


async def _chunks(
    messages: AsyncIterator[inference_pb2.CompletionChunk], body: CompletionRequest
) -> AsyncIterator[Completion]:
    """Text deltas per choice, each choice's last chunk with its finish reason; then [usage]."""
    async with aclosing(messages):
        async for message in messages:
            header = {"id": message.id, "created": message.created, "model": message.model}
            if message.HasField("usage"):  # the last message
                if body.include_usage:
                    yield Completion(**header, choices=[], usage=Usage.from_proto(message.usage))
                continue
            logprobs = None
            if body.logprobs is not None:
                logprobs = CompletionLogprobs.from_proto(message.logprobs)
            choice = CompletionChoice(
                index=message.index,
                text=message.delta,
                finish_reason=message.finish_reason or None,
                logprobs=logprobs,
            )
            yield Completion(**header, choices=[choice])
