"""Chat completions: OpenAI's request, response and stream chunks, and the inference protos."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2

from tunery_gateway.schemas.base import INT32_MAX, INT64_MAX, RequestModel

# Values of not-yet-supported parameters that ask for nothing beyond plain text generation.
_PLAIN_TEXT_VALUES: dict[str, list[Any]] = {
    "response_format": [{"type": "text"}],
    "tool_choice": ["none", "auto"],
    "modalities": [["text"]],
    "logprobs": [False],
    "top_logprobs": [0],
}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    # Extra fields are ignored: the SDK echoes assistant messages with null refusal/audio/tool_calls.
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> "ChatMessage":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs 'content'")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def to_proto(self) -> common_pb2.ChatMessage:
        return common_pb2.ChatMessage(role=self.role, content=self.text(), name=self.name or "")


class StreamOptions(BaseModel):
    include_usage: bool = False  # other flags (include_obfuscation) do not apply here


class ChatCompletionRequest(RequestModel):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-INT64_MAX - 1, le=INT64_MAX)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    # Known OpenAI parameters accepted and not acted upon.
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None

    # Known OpenAI parameters not supported yet: a 400 naming them unless they ask for nothing.
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    web_search_options: Any = None

    @field_validator("n")
    @classmethod
    def _single_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported")
        return value

    @field_validator(*_PLAIN_TEXT_VALUES, "tools", "functions", "function_call", "audio", "prediction")
    @classmethod
    def _not_supported(cls, value: Any, info: ValidationInfo) -> Any:
        if value in (None, [], {}) or value in _PLAIN_TEXT_VALUES.get(info.field_name, []):
            return value
        raise ValueError("not supported yet")

    @field_validator("web_search_options")
    @classmethod
    def _no_web_search(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("not supported yet")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_proto(self, org: str) -> inference_pb2.ChatCompletionRequest:
        request = inference_pb2.ChatCompletionRequest(
            org=org,
            model=self.model,
            messages=[message.to_proto() for message in self.messages],
            stop=[self.stop] if isinstance(self.stop, str) else (self.stop or []),
        )
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            request.max_tokens = max_tokens
        if self.temperature is not None:
            request.temperature = self.temperature
        if self.top_p is not None:
            request.top_p = self.top_p
        if self.seed is not None:
            request.seed = self.seed
        return request


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def from_proto(cls, usage: common_pb2.Usage) -> "Usage":
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage

    @classmethod
    def from_proto(cls, response: inference_pb2.ChatCompletionResponse) -> "ChatCompletion":
        return cls(
            id=response.id,
            created=response.created,
            model=response.model,
            choices=[
                Choice(
                    message=AssistantMessage(content=response.content),
                    finish_reason=response.finish_reason or "stop",
                )
            ],
            usage=Usage.from_proto(response.usage),
        )


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
