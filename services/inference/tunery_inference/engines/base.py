"""The engine interface the gRPC service relies on; each engine (transformers, vLLM) implements it."""

from pathlib import Path
from typing import Protocol

from tunery_inference.engines.sampling import GenerationParams
from tunery_inference.engines.streams import EngineStream

Prompt = str | list[dict]  # raw text, or chat messages for the model's chat template


class Engine(Protocol):
    """One base model with LoRA adapters loaded by name."""

    def has_adapter(self, name: str) -> bool: ...

    def load_adapter(self, name: str, adapter_dir: Path) -> None: ...

    def remove_adapter(self, name: str) -> None: ...

    def close(self) -> None: ...

    def stream(
        self, prompt: Prompt, adapter: str | None, params: GenerationParams, tools: list[dict] | None = None
    ) -> EngineStream:
        """Each choice's deltas then its Choice, choice after choice, then the Completion, to
        iterate in a thread or `async for` on an event loop.

        Checks the request before returning (generation may start at once): raises
        RequestError (engines.errors) naming the parameter at fault, KeyError for an adapter
        that is not loaded. Closing the iterator stops generation.
        """
        ...
