"""How a completion's items travel from an engine's decoding thread to whoever reads them.

An engine decodes on a thread of its own and puts each choice's items (Delta, Choice, or an
exception) into that choice's Outbox. The reader is either a thread blocking on `get` (tests,
`generate`) or a coroutine awaiting `aget` on the service's event loop, which costs no thread
per request: the decoding thread wakes the loop only when the reader is waiting. A thread per
running request, each woken for each token, would contend with the decoding thread for the
interpreter at every step.
"""

import asyncio
import threading
from collections import deque
from collections.abc import Callable

from tunery_inference.engines.outputs import Choice, Completion, Delta


class Outbox:
    """One producer thread, one reader (blocking or on an event loop)."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None

    def put(self, item: object) -> None:
        with self._lock:
            self._items.append(item)
            self._ready.notify()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, future = waiter
            loop.call_soon_threadsafe(_resolve, future)

    def get(self) -> object:
        with self._lock:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()

    async def aget(self) -> object:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                future = asyncio.get_running_loop().create_future()
                self._waiter = (asyncio.get_running_loop(), future)
            await future


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class EngineStream:
    """A completion's items: each choice's deltas then its Choice, choice after choice, then the
    Completion. Iterate it (blocking) or `async for` it; `close` stops generation (the engine's
    `on_close`, called once, also when the items ran out or one was an exception)."""

    def __init__(self, outboxes: list[Outbox], prompt_tokens: int, on_close: Callable[[], None]):
        self._outboxes = outboxes
        self._prompt_tokens = prompt_tokens
        self._on_close = on_close
        self._choices: list[Choice] = []
        self._closed = False

    def __iter__(self) -> "EngineStream":
        return self

    def __next__(self) -> Delta | Choice | Completion:
        if self._reading() is None:
            return self._end(StopIteration)
        return self._take(self._reading().get())

    def __aiter__(self) -> "EngineStream":
        return self

    async def __anext__(self) -> Delta | Choice | Completion:
        if self._reading() is None:
            return self._end(StopAsyncIteration)
        return self._take(await self._reading().aget())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close()

    def _reading(self) -> Outbox | None:
        """The outbox of the choice being read; None once every choice has ended."""
        done = len(self._choices)
        return self._outboxes[done] if done < len(self._outboxes) and not self._closed else None

    def _end(self, stop: type[Exception]) -> Completion:
        if self._closed:
            raise stop
        self.close()
        return Completion(list(self._choices), self._prompt_tokens)

    def _take(self, item: object) -> Delta | Choice:
        if isinstance(item, Exception):
            self.close()
            raise item
        if isinstance(item, Choice):
            self._choices.append(item)
        return item
