"""Text completions (OpenAI's legacy /v1/completions): raw prompts, no chat template."""

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from tunery.inference.v1 import inference_pb2

from tunery_gateway.schemas.sampling import SamplingRequest, Usage

MAX_LOGPROBS = 5
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


class CompletionRequest(SamplingRequest):
    prompt: str | Annotated[list[str], Field(min_length=1)]
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    # Known OpenAI parameters not supported: a 400 naming them unless they ask for nothing.
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("not supported (it needs a model trained to fill in the middle)")
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only best_of=1 is supported; use n for several choices")
        return value

    def to_proto(self, org: str) -> inference_pb2.TextCompletionRequest:
        request = inference_pb2.TextCompletionRequest(
            org=org,
            prompt=[self.prompt] if isinstance(self.prompt, str) else self.prompt,
            echo=bool(self.echo),
            logprobs=self.logprobs is not None,
            top_logprobs=self.logprobs or 0,
        )
        self.fill(request, self.max_tokens or DEFAULT_MAX_TOKENS)
        return request


class CompletionLogprobs(BaseModel):
    """The legacy shape: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def from_proto(cls, entries) -> "CompletionLogprobs":
        return cls(
            tokens=[e.token for e in entries],
            token_logprobs=[e.logprob for e in entries],
            top_logprobs=[{top.token: top.logprob for top in e.top_logprobs} for e in entries],
            text_offset=[e.text_offset for e in entries],
        )


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    """A whole completion, and also each streamed chunk (OpenAI streams the same object)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None

    @classmethod
    def from_proto(cls, response: inference_pb2.CompletionResponse, logprobs: bool) -> "Completion":
        return cls(
            id=response.id,
            created=response.created,
            model=response.model,
            choices=[
                CompletionChoice(
                    index=choice.index,
                    text=choice.text,
                    finish_reason=choice.finish_reason or "stop",
                    logprobs=CompletionLogprobs.from_proto(choice.logprobs) if logprobs else None,
                )
                for choice in response.choices
            ],
            usage=Usage.from_proto(response.usage),
        )
