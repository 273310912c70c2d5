"""Chat completions: OpenAI's request, response and stream chunks, and the inference protos."""

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2

from tunery_gateway.schemas.base import INT32_MAX, RequestModel
from tunery_gateway.schemas.sampling import SamplingRequest, Usage

MAX_TOP_LOGPROBS = 20


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    # Extra fields are ignored: the SDK echoes assistant messages with null refusal/audio.
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant message's function calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @model_validator(mode="after")
    def _content_required(self) -> "ChatMessage":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs 'content'")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs 'tool_call_id'")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def to_proto(self) -> common_pb2.ChatMessage:
        return common_pb2.ChatMessage(
            role=self.role,
            content=self.text(),
            name=self.name or "",
            tool_calls=[
                common_pb2.ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                for c in self.tool_calls or []
            ],
            tool_call_id=self.tool_call_id or "",
        )


class FunctionDefinition(RequestModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    # Rendered into the prompt by the model's chat template; a template without tools is a 400.
    tools: list[Tool] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None

    # Accepted and not acted upon: they change nothing in the output.
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    # Known OpenAI parameters not supported: a 400 naming them unless they ask for nothing.
    reasoning_effort: str | None = None
    verbosity: str | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    web_search_options: Any = None

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: Any) -> Any:
        # The model decides whether to call a tool: forcing a call needs the model's call format.
        if value not in (None, "none", "auto"):
            raise ValueError("only 'none' and 'auto' are supported")
        return value

    @field_validator(
        "reasoning_effort",
        "verbosity",
        "functions",
        "function_call",
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
    )
    @classmethod
    def _not_supported(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == [] or (info.field_name == "modalities" and value == ["text"]):
            return value
        raise ValueError("not supported")

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):  # logprobs is declared (so checked) first
            raise ValueError("logprobs must be true to use top_logprobs")
        return value

    def to_proto(self, org: str) -> inference_pb2.ChatCompletionRequest:
        request = inference_pb2.ChatCompletionRequest(
            org=org,
            messages=[message.to_proto() for message in self.messages],
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
        )
        self.fill(request, self.max_completion_tokens or self.max_tokens)
        # tool_choice "none": the model must not call tools, so it is not told about them.
        if self.tools and self.tool_choice != "none":
            request.tools_json = json.dumps([tool.model_dump(exclude_none=True) for tool in self.tools])
        return request


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None

    @classmethod
    def from_proto(cls, entry: inference_pb2.TopLogprob) -> "TopLogprob":
        return cls(token=entry.token, logprob=entry.logprob, bytes=list(entry.bytes))


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]

    @classmethod
    def from_proto(cls, entry: inference_pb2.TokenLogprob) -> "TokenLogprob":
        return cls(
            token=entry.token,
            logprob=entry.logprob,
            bytes=list(entry.bytes),
            top_logprobs=[TopLogprob.from_proto(top) for top in entry.top_logprobs],
        )


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None

    @classmethod
    def from_proto(cls, entries) -> "ChoiceLogprobs":
        return cls(content=[TokenLogprob.from_proto(entry) for entry in entries])


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage

    @classmethod
    def from_proto(cls, response: inference_pb2.CompletionResponse, logprobs: bool) -> "ChatCompletion":
        return cls(
            id=response.id,
            created=response.created,
            model=response.model,
            choices=[
                Choice(
                    index=choice.index,
                    message=AssistantMessage(content=choice.text),
                    finish_reason=choice.finish_reason or "stop",
                    logprobs=ChoiceLogprobs.from_proto(choice.logprobs) if logprobs else None,
                )
                for choice in response.choices
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
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
