"""Request body size limits, answered with an OpenAI error (413) before the body is held.

JSON bodies are read into memory, so every route but the uploads gets `max_request_mb`;
`/v1/files` streams uploads to disk and applies TUNERY_MAX_UPLOAD_MB itself.
"""

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunery_gateway.errors import OpenAIError


def declared_too_large(headers: Headers, max_bytes: int) -> bool:
    declared = headers.get("content-length", "")
    return declared.isdigit() and int(declared) > max_bytes


def counting_receive(receive: Receive, max_bytes: int, error: OpenAIError) -> Receive:
    """`receive` raising `error` once the body passes `max_bytes` (a chunked body declares no size)."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise error
        return message

    return limited


class RequestSizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefix: str):
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefix = exempt_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefix):
            await self.app(scope, receive, send)
            return
        error = OpenAIError(
            413, f"Request body is larger than {self.max_bytes >> 20} MB.", code="request_too_large"
        )
        if declared_too_large(Headers(scope=scope), self.max_bytes):
            await error.response()(scope, receive, send)
            return
        # Raised inside the route, the error reaches the OpenAIError handler like any other.
        await self.app(scope, counting_receive(receive, self.max_bytes, error), send)
