"""A pure ASGI middleware that adds headers to every HTTP response as it starts, streamed ones
included (a StreamingResponse is built by the route, so a dependency cannot set its headers)."""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ResponseHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    def started(self, scope: Scope) -> object:
        """What the subclass notes as the request arrives (passed back to `add`)."""
        return None

    def add(self, scope: Scope, headers: MutableHeaders, noted: object) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        noted = self.started(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.add(scope, MutableHeaders(scope=message), noted)
            await send(message)

        await self.app(scope, receive, send_with_headers)
