"""Rate limits applied to completion routes: admission, 429s, x-ratelimit-* headers, settlement.

A route takes `InferenceGateDep`, admits its inference request before calling the service, and
wraps the call so that the reservation is settled with the actual usage: from the reply, from the
stream's last message, or (a client gone mid-stream) from what was streamed until then.
"""

import math
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import MutableHeaders, State
from starlette.types import Scope
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc

from tunery_gateway.auth import Org
from tunery_gateway.errors import OpenAIError
from tunery_gateway.ratelimit import RateLimited, RateLimiter, Ticket
from tunery_gateway.response_headers import ResponseHeaders
from tunery_gateway.timing import add_upstream

_STATE_KEY = "rate_limit_headers"
CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb; the gateway has no tokenizer
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators a chat template adds per message

CompletionRequest = inference_pb2.ChatCompletionRequest | inference_pb2.TextCompletionRequest


def prompt_estimate(request: CompletionRequest) -> int:
    """Tokens the prompt(s) will likely take, from their length in characters."""
    if isinstance(request, inference_pb2.ChatCompletionRequest):
        chars = len(request.tools_json) + sum(
            len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls)
            for m in request.messages
        )
        return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(request.messages)
    return sum(math.ceil(len(prompt) / CHARS_PER_TOKEN) for prompt in request.prompt)


def reservation(request: CompletionRequest, default_max_tokens: int) -> int:
    """Prompt estimate plus the most the request may generate: max_tokens per choice and prompt."""
    prompts = len(request.prompt) if isinstance(request, inference_pb2.TextCompletionRequest) else 1
    max_tokens = request.max_tokens if request.HasField("max_tokens") else default_max_tokens
    return prompt_estimate(request) + prompts * (request.n or 1) * max_tokens


class Admission:
    """One admitted request: wraps its inference call so that the reservation gets settled."""

    def __init__(self, ticket: Ticket, prompt_tokens: int, state: State):
        self.ticket = ticket
        self.prompt_tokens = prompt_tokens
        self.state = state  # the HTTP request's, where the wait on the service is counted

    async def settled(
        self, call: Awaitable[inference_pb2.CompletionResponse]
    ) -> inference_pb2.CompletionResponse:
        """The reply of a whole completion, its usage settled; a failed call uses no tokens."""
        started = time.perf_counter()
        try:
            reply = await call
        except BaseException:
            self.ticket.settle(0)
            raise
        finally:
            add_upstream(self.state, started)
        self.ticket.settle(reply.usage.total_tokens)
        return reply

    async def metered(
        self, opening: Awaitable[AsyncIterator[inference_pb2.CompletionChunk]]
    ) -> AsyncIterator[inference_pb2.CompletionChunk]:
        """A stream's messages (see streaming.open_stream), settled when it ends however it ends."""
        started = time.perf_counter()
        try:
            messages = await opening
        except BaseException:
            self.ticket.settle(0)
            raise
        finally:
            add_upstream(self.state, started)
        return self._meter(messages)

    async def _meter(
        self, messages: AsyncIterator[inference_pb2.CompletionChunk]
    ) -> AsyncIterator[inference_pb2.CompletionChunk]:
        deltas = 0
        try:
            async with aclosing(messages):
                async for message in messages:
                    if message.HasField("usage"):
                        self.ticket.settle(message.usage.total_tokens)
                    elif message.delta:
                        deltas += 1
                    yield message
        finally:
            # Cut short (the client went away, or the service failed): a delta is about a token.
            self.ticket.settle(self.prompt_tokens + deltas)


class InferenceGate:
    """A completion request's way to the inference service: the caller's org, the service and
    the call's deadline, and admission under the caller's rate limits. One dependency for all of
    it: FastAPI's cost per dependency was a fifth of the gateway's own time on these routes."""

    def __init__(self, request: Request, org: str, key_hash: str):
        app_state = request.app.state
        self.request = request
        self.org = org
        self.key_hash = key_hash
        self.inference: inference_pb2_grpc.InferenceStub = app_state.inference
        self.timeout_s: float = app_state.settings.request_timeout_s
        self.limiter: RateLimiter = app_state.rate_limiter
        self.default_max_tokens: int = app_state.settings.rate_limit_default_max_tokens
        request.state.service = "inference"  # errors name the service that failed

    def admit(self, inference_request: CompletionRequest) -> Admission:
        """Reserves the request's tokens under (API key, model), or raises a 429 OpenAI error."""
        model = inference_request.model
        try:
            ticket = self.limiter.admit(
                self.key_hash, self.org, model, reservation(inference_request, self.default_max_tokens)
            )
        except RateLimited as exc:
            headers = exc.state.headers()
            if exc.retry_after_s is None:  # larger than the limit itself: retrying cannot help
                headers["x-should-retry"] = "false"
            else:
                headers["retry-after"] = str(max(1, math.ceil(exc.retry_after_s)))
            raise OpenAIError(
                429, exc.message, type=exc.kind, code="rate_limit_exceeded", headers=headers
            ) from None
        setattr(self.request.state, _STATE_KEY, ticket.state.headers())
        return Admission(ticket, prompt_estimate(inference_request), self.request.state)


async def inference_gate(request: Request, org: Org) -> InferenceGate:
    return InferenceGate(request, org, request.state.key_hash)  # key_hash: set by the Org dependency


InferenceGateDep = Annotated[InferenceGate, Depends(inference_gate)]


class RateLimitHeaders(ResponseHeaders):
    """Adds the admission's x-ratelimit-* headers to the response (a 429 has set its own)."""

    def add(self, scope: Scope, headers: MutableHeaders, noted: object) -> None:
        for name, value in scope.get("state", {}).get(_STATE_KEY, {}).items():
            if name not in headers:
                headers[name] = value
