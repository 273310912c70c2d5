"""What chat and text completions share: the sampling parameters, the response format, usage."""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2

from tunery_gateway.schemas.base import INT32_MAX, INT64_MAX, RequestModel

MAX_CHOICES = 128


class StreamOptions(BaseModel):
    include_usage: bool = False  # other flags (include_obfuscation) do not apply here


class JsonSchemaSpec(RequestModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    # Outputs follow the schema whether or not this is set: decoding is constrained either way.
    strict: bool | None = None


class ResponseFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only with it")
        return self

    def to_proto(self) -> inference_pb2.ResponseFormat:
        schema = self.json_schema.schema_ if self.json_schema else None
        return inference_pb2.ResponseFormat(type=self.type, json_schema=json.dumps(schema) if schema else "")


class SamplingRequest(RequestModel):
    """The parameters both /v1/chat/completions and /v1/completions take, under OpenAI's names."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-INT64_MAX - 1, le=INT64_MAX)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    response_format: ResponseFormat | None = None  # also on /v1/completions (an extension)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # Accepted and not acted upon: they change nothing in the output.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit() or int(token) > INT32_MAX:
                raise ValueError(f"keys must be token ids, not {token[:32]!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases must be between -100 and 100, not {bias}")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def fill(self, request, max_tokens: int | None) -> None:
        """Sets the shared sampling fields of a chat or text completion request proto."""
        request.model = self.model
        request.stop.extend([self.stop] if isinstance(self.stop, str) else (self.stop or []))
        if max_tokens is not None:
            request.max_tokens = max_tokens
        if self.temperature is not None:
            request.temperature = self.temperature
        if self.top_p is not None:
            request.top_p = self.top_p
        if self.seed is not None:
            request.seed = self.seed
        request.n = self.n or 1
        request.frequency_penalty = self.frequency_penalty or 0.0
        request.presence_penalty = self.presence_penalty or 0.0
        request.logit_bias.update({int(token): bias for token, bias in (self.logit_bias or {}).items()})
        if self.response_format is not None:
            request.response_format.CopyFrom(self.response_format.to_proto())


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
